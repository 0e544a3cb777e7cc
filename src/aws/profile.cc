#include "aws/profile.h"

#include <fstream>
#include <sstream>

namespace hsdo::aws {

namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string ExpandHome(const std::string& path, const std::string& home) {
  if (path.starts_with("~/")) return home + path.substr(1);
  return path;
}

}  // namespace

IniSections ParseIni(std::string_view text) {
  IniSections sections;
  std::string current;
  bool in_section = false;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view raw = text.substr(pos, end - pos);
    pos = end + 1;
    const bool indented = !raw.empty() && (raw.front() == ' ' || raw.front() == '\t');
    const std::string_view line = Trim(raw);
    if (line.empty() || line.front() == '#' || line.front() == ';') {
      if (end == text.size()) break;
      continue;
    }
    if (line.front() == '[') {
      const std::size_t close = line.find(']');
      in_section = close != std::string_view::npos;
      if (in_section) {
        current = std::string(Trim(line.substr(1, close - 1)));
        sections[current];
      }
    } else if (in_section && !indented) {
      const std::size_t eq = line.find('=');
      if (eq != std::string_view::npos) {
        sections[current][std::string(Trim(line.substr(0, eq)))] =
            std::string(Trim(line.substr(eq + 1)));
      }
    }
    if (end == text.size()) break;
  }
  return sections;
}

std::string ProfileName(const AwsConfig& config) {
  return config.profile.empty() ? "default" : config.profile;
}

std::string CredentialsFilePath(const AwsConfig& config) {
  if (!config.shared_credentials_file.empty()) {
    return ExpandHome(config.shared_credentials_file, config.home);
  }
  return config.home.empty() ? "" : config.home + "/.aws/credentials";
}

std::string ConfigFilePath(const AwsConfig& config) {
  if (!config.config_file.empty()) return ExpandHome(config.config_file, config.home);
  return config.home.empty() ? "" : config.home + "/.aws/config";
}

std::map<std::string, std::string> LoadProfile(const AwsConfig& config) {
  const std::string profile = ProfileName(config);
  std::map<std::string, std::string> settings;
  if (const std::string path = ConfigFilePath(config); !path.empty()) {
    const IniSections sections = ParseIni(ReadWholeFile(path));
    const std::string section = profile == "default" ? "default" : "profile " + profile;
    if (auto it = sections.find(section); it != sections.end()) settings = it->second;
    // Older files name the default profile "[profile default]" too.
    if (profile == "default" && settings.empty()) {
      if (auto alt = sections.find("profile default"); alt != sections.end()) {
        settings = alt->second;
      }
    }
  }
  if (const std::string path = CredentialsFilePath(config); !path.empty()) {
    const IniSections sections = ParseIni(ReadWholeFile(path));
    if (auto it = sections.find(profile); it != sections.end()) {
      for (const auto& [key, value] : it->second) settings[key] = value;
    }
  }
  return settings;
}

}  // namespace hsdo::aws
