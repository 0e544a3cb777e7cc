// The AWS shared files (~/.aws/credentials and ~/.aws/config), as the SDKs read them: the
// credentials file's sections are profile names; the config file's are "[profile NAME]",
// except "[default]". Settings of the credentials file win over the config file's.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "config/config.h"

namespace hsdo::aws {

using IniSections = std::map<std::string, std::map<std::string, std::string>>;

// A lenient INI parser: "[section]", "key = value", '#' and ';' comments. Lines indented
// under a key (sub-settings such as s3 = ...) are ignored.
IniSections ParseIni(std::string_view text);

// The profile in use: AwsConfig.profile, or "default".
std::string ProfileName(const AwsConfig& config);

// The files' paths, with "~/" expanded from AwsConfig.home.
std::string CredentialsFilePath(const AwsConfig& config);
std::string ConfigFilePath(const AwsConfig& config);

// Every setting of the profile in use, from both files (missing files are fine).
std::map<std::string, std::string> LoadProfile(const AwsConfig& config);

}  // namespace hsdo::aws
