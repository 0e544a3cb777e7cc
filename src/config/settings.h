// The settings table's entry type and the kinds of value (config.cc's loader walks the table;
// settings.cc holds it). Internal to the config module.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace hsdo::config_detail {

// Parses `text` into the Config; on failure returns what was expected ("true or false").
using Parser = std::function<std::optional<std::string>(std::string_view text, Config& config)>;
// The effective value, as text that the parser accepts.
using Printer = std::function<std::string(const Config& config)>;

struct Kind {
  Parser parse;
  Printer print;
};

enum SettingFlags : unsigned {
  kNoFlags = 0,
  kSecret = 1,           // masked in errors and `hsdo config`
  kEnvironmentOnly = 2,  // the AWS SDK's variables: environment only, not in conf/env.yaml
  kList = 4,             // comma-separated; in the environment also a YAML list, [a, b]
  kUrl = 8,  // a URL or a list of them: a value with '@', '?' or '#' is never shown in an error
  kSecretPath = 16,  // a secret's file: shown only when it may be a path (MayShowSecretPath)
};

struct Setting {
  std::string_view name;
  SettingRole role;
  std::string_view default_text;  // parsed like a set value; empty: the Config default
  Kind kind;
  std::string_view doc;
  std::vector<std::string_view> aliases = {};
  unsigned flags = kNoFlags;
};

// Every variable, in the order of conf/env.yaml. Entries are parsed in this order, so an
// entry may read a Config field set by an earlier one.
const std::vector<Setting>& SettingsTable();

std::string Trim(std::string_view s);
std::vector<std::string> SplitList(std::string_view text);

}  // namespace hsdo::config_detail
