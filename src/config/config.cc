#include "config/config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include "common/logging.h"
#include "common/secret_file.h"
#include "config/settings.h"

extern char** environ;  // NOLINT: POSIX

namespace hsdo {

using config_detail::Setting;
using config_detail::SettingsTable;
using config_detail::SplitList;
using config_detail::Trim;

namespace {

struct RawValue {
  std::string value;
  std::string origin;     // "the environment", the file's path, or "the default"
  std::string spelling;   // the name it was given under: hsdo's or an alias
  bool unquoted = false;  // a plain YAML scalar (the file's `true`, not `"true"`)
};

// The Python HSDO's switches, which it took as on only for the text "true" (`== "true"`): an
// unquoted YAML `true` (its YAML loader makes it a boolean) or a `True` was off there. hsdo
// reads either as on, so the switch between the two tools turns it on, and a fleet of both
// disagrees (review: an AZ limiter silently off under the Python agents went on under hsdo's).
// (DEBUG too, but it changes only the logs.)
constexpr std::string_view kSeedSwitches[] = {"AZ_LIMITER", "ALL_SERVERS_IN_FALLBACK_BACKEND"};

using RawValues = std::map<std::string, RawValue, std::less<>>;  // by hsdo's name

const Setting* FindSetting(std::string_view spelling) {
  for (const auto& setting : SettingsTable()) {
    if (setting.name == spelling) return &setting;
    for (const auto alias : setting.aliases) {
      if (alias == spelling) return &setting;
    }
  }
  return nullptr;
}

// Whether `a` and `b` differ by at most one typo, ignoring case: a letter added, left out,
// replaced, or two neighbours swapped (Damerau-Levenshtein distance <= 1).
bool OneTypoApart(std::string_view a, std::string_view b) {
  const auto same = [](char x, char y) {
    return std::toupper(static_cast<unsigned char>(x)) ==
           std::toupper(static_cast<unsigned char>(y));
  };
  if (a.size() < b.size()) std::swap(a, b);
  if (a.size() - b.size() > 1) return false;
  std::size_t i = 0;
  while (i < b.size() && same(a[i], b[i])) ++i;
  if (i == b.size()) return true;  // equal, or one letter added at the end
  const auto rest_same = [&](std::size_t from_a, std::size_t from_b) {
    return a.size() - from_a == b.size() - from_b &&
           std::equal(a.begin() + static_cast<std::ptrdiff_t>(from_a), a.end(),
                      b.begin() + static_cast<std::ptrdiff_t>(from_b), same);
  };
  if (a.size() > b.size()) return rest_same(i + 1, i);  // one letter added
  return rest_same(i + 1, i + 1) ||                     // one letter replaced
         (i + 1 < a.size() && same(a[i], b[i + 1]) && same(a[i + 1], b[i]) &&
          rest_same(i + 2, i + 2));  // two swapped
}

// The setting spelling `name` is one typo away from, if it is no spelling itself.
std::optional<std::string_view> NearMiss(std::string_view name) {
  if (name.size() < 5 || FindSetting(name) != nullptr) return std::nullopt;
  // The AWS SDKs read AWS_ENDPOINT_URL_<SERVICE> for every service, and short service ids are
  // one letter apart (SQS, SES, SNS and STS; ECS, ECR and EC2): only another case of hsdo's own
  // is said for those. (DYNAMODB and AUTO_SCALING have no service one typo away.)
  constexpr std::string_view kEndpointPrefix = "AWS_ENDPOINT_URL_";
  const bool aws_endpoint =
      name.starts_with(kEndpointPrefix) && name.size() <= kEndpointPrefix.size() + 3;
  const auto near = [&](std::string_view spelling) {
    if (!aws_endpoint) return OneTypoApart(name, spelling);
    return name.size() == spelling.size() &&
           std::equal(name.begin(), name.end(), spelling.begin(), [](char x, char y) {
             return std::toupper(static_cast<unsigned char>(x)) ==
                    std::toupper(static_cast<unsigned char>(y));
           });
  };
  for (const auto& setting : SettingsTable()) {
    if (near(setting.name)) return setting.name;
    for (const auto alias : setting.aliases) {
      if (near(alias)) return alias;
    }
  }
  return std::nullopt;
}

bool IsSecret(const Setting& setting) { return (setting.flags & config_detail::kSecret) != 0; }

// A URL with user info, a query or a fragment may carry a credential anywhere in them (a
// password may hold '/', ',' or '?'): not shown at all.
bool MayHoldACredential(const Setting& setting, std::string_view value) {
  return (setting.flags & config_detail::kUrl) != 0 &&
         value.find_first_of("@?#") != std::string_view::npos;
}
constexpr std::string_view kHiddenUrl = "<hidden: it has user info, a query or a fragment>";
// A secret's _FILE value that may be the secret itself.
bool HidesItsPath(const Setting& setting, std::string_view value) {
  return (setting.flags & config_detail::kSecretPath) != 0 && !value.empty() &&
         !MayShowSecretPath(std::string(value));
}
constexpr std::string_view kHiddenPath =
    "<hidden: no such file or directory, and it may be the secret itself>";

// A value as an error message may show it: escaped, and never a secret (nor what may be a
// URL's credentials).
std::string Shown(const Setting& setting, std::string_view value) {
  if (IsSecret(setting)) return "<hidden>";
  if (HidesItsPath(setting, value)) return std::string(kHiddenPath);
  if (MayHoldACredential(setting, value)) return std::string(kHiddenUrl);
  return "\"" + logging::EscapeControlCharacters(value) + "\"";
}

Error Invalid(const Setting& setting, const RawValue& raw, std::string_view expected) {
  const std::string alias_of =
      raw.spelling == setting.name ? "" : fmt::format("alias of {}, ", setting.name);
  return MakeError(ErrorCode::kInvalidArgument,
                   "invalid configuration: {}={} ({}from {}): expected {}", raw.spelling,
                   Shown(setting, raw.value), alias_of, raw.origin, expected);
}

bool HasControlCharacters(std::string_view text) {
  return std::any_of(text.begin(), text.end(),
                     [](unsigned char c) { return c < 0x20 || c == 0x7f; });
}

// Two spellings of one setting given in the same place with different values.
Result<void> CheckSameValue(const Setting& setting, const RawValue& first, const RawValue& second) {
  if (first.value.empty() || second.value.empty() || first.value == second.value) return Ok();
  return MakeError(ErrorCode::kInvalidArgument,
                   "invalid configuration: {}={} (from {}) and {}={} (from {}) are the same "
                   "setting with different values: set only one of them",
                   first.spelling, Shown(setting, first.value), first.origin, second.spelling,
                   Shown(setting, second.value), second.origin);
}

// HAPROXY_BACKEND_LIST in YAML: a list of {name, base_name, port}, or the Python HSDO's
// mapping {backend: {baseName: ..., serverPort: "..."}}; both become "backend:base:port,...".
// Either spelling of a key is read in either form. Any other key is an error: a misspelled
// port key (`server_port`) silently gave every server HAPROXY_BACKEND_SERVER_PORT.
Result<std::string> BackendItem(const std::string& name, const YAML::Node& fields) {
  for (const auto& entry : fields) {
    const std::string key = entry.first.IsScalar() ? entry.first.Scalar() : std::string("?");
    if (key != "name" && key != "baseName" && key != "base_name" && key != "serverPort" &&
        key != "port") {
      return MakeError(ErrorCode::kInvalidArgument,
                       "invalid configuration: HAPROXY_BACKEND_LIST (line {}): backend '{}' has "
                       "an unknown key '{}': expected baseName (or base_name) and serverPort "
                       "(or port)",
                       entry.first.Mark().line + 1, name, key);
    }
  }
  // A key given twice, or without a value (a list, a mapping, nothing): an error, not the
  // default (a serverPort of [8080] gave every server HAPROXY_BACKEND_SERVER_PORT).
  std::string values[2];
  const char* keys[2][2] = {{"baseName", "base_name"}, {"serverPort", "port"}};
  for (int i = 0; i < 2; ++i) {
    const auto [key, other] = keys[i];
    if (fields[key] && fields[other]) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "invalid configuration: HAPROXY_BACKEND_LIST: backend '{}' gives both {} "
                       "and {}",
                       name, key, other);
    }
    const YAML::Node value = fields[key] ? fields[key] : fields[other];
    if (!value) continue;
    values[i] = value.IsScalar() ? Trim(value.Scalar()) : std::string();
    if (values[i].empty()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "invalid configuration: HAPROXY_BACKEND_LIST (line {}): backend '{}': {} "
                       "must be a single value",
                       value.Mark().line + 1, name, fields[key] ? key : other);
    }
  }
  std::string entry = name + ":" + values[0];
  if (!values[1].empty()) entry += ":" + values[1];
  return entry;
}

Result<std::string> YamlToText(const Setting& setting, const YAML::Node& node) {
  const bool backend_list = setting.name == "HAPROXY_BACKEND_LIST";
  const auto invalid = [&](const YAML::Node& at, std::string_view expected) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "invalid configuration: {} (line {}): expected {}", setting.name,
                     at.Mark().line + 1, expected);
  };
  if (node.IsNull()) return std::string{};
  if (node.IsScalar()) return Trim(node.Scalar());
  std::vector<std::string> items;
  if (node.IsSequence()) {
    for (const auto& item : node) {
      if (item.IsScalar()) {
        items.push_back(Trim(item.Scalar()));
      } else if (backend_list && item.IsMap() && item["name"]) {
        auto backend = BackendItem(Trim(item["name"].as<std::string>()), item);
        if (!backend) return backend.error();
        items.push_back(std::move(*backend));
      } else {
        return invalid(item, "a list of values");
      }
    }
  } else if (backend_list && node.IsMap()) {
    for (const auto& entry : node) {
      if (!entry.first.IsScalar() || !entry.second.IsMap()) {
        return invalid(entry.first, "a mapping of backend: {baseName: ..., serverPort: ...}");
      }
      auto backend = BackendItem(Trim(entry.first.Scalar()), entry.second);
      if (!backend) return backend.error();
      items.push_back(std::move(*backend));
    }
  } else {
    return invalid(node, "a value or a list");
  }
  std::string joined;
  for (const auto& item : items) joined += (joined.empty() ? "" : ",") + item;
  return joined;
}

// A backend list given in the environment in its YAML/JSON form ('{' or '[' first), or a
// list setting as a YAML list ('[' first, ']' last): read as the file's would be. As text,
// CLIENT_ASG_NAMES='["asg-a"]' was the group `["asg-a"]`, which no target is in.
Result<std::string> EnvironmentText(const Setting& setting, const std::string& value) {
  const bool structured = setting.name == "HAPROXY_BACKEND_LIST"
                              ? value.starts_with('{') || value.starts_with('[')
                              : (setting.flags & config_detail::kList) != 0 &&
                                    value.starts_with('[') && value.ends_with(']');
  if (!structured) return value;
  try {
    return YamlToText(setting, YAML::Load(value));
  } catch (const YAML::Exception& e) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "invalid configuration: {} (from the environment): {}", setting.name, e.msg);
  }
}

void Warn(std::vector<std::string>* warnings, std::string message) {
  if (warnings != nullptr) {
    warnings->push_back(std::move(message));
  } else {
    spdlog::warn("{}", message);
  }
}

// Whether any user may read the file: it is readable by others, and so is the way to it (the
// directory that holds it searchable by others).
bool ReadableByEveryone(const std::string& path, const struct stat& file) {
  if ((file.st_mode & S_IROTH) == 0) return false;
  std::error_code ec;
  const auto directory = std::filesystem::absolute(path, ec).parent_path();
  struct stat dir {};
  return ec || ::stat(directory.c_str(), &dir) != 0 || (dir.st_mode & S_IXOTH) != 0;
}

Result<RawValues> ReadFile(const std::string& path, bool must_exist,
                           std::vector<std::string>* warnings) {
  RawValues values;
  if (path.empty()) return values;
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    if (must_exist) {
      return MakeError(ErrorCode::kNotFound, "cannot read config file {}: {}", path,
                       std::strerror(errno));
    }
    return values;
  }
  if (!S_ISREG(st.st_mode)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "invalid config file {}: not a regular file (expected a YAML file)", path);
  }
  std::ifstream in(path);
  if (!in) {
    return MakeError(ErrorCode::kNotFound, "cannot read config file {}: {}", path,
                     std::strerror(errno));
  }
  std::vector<std::string_view> secrets;  // given a value here
  try {
    const YAML::Node root = YAML::Load(in);
    if (root.IsNull()) return values;
    if (!root.IsMap()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "invalid config file {}: expected a map of VARIABLE: value", path);
    }
    std::map<std::string, int, std::less<>> lines;  // each key's first line
    for (const auto& entry : root) {
      const auto key = entry.first.as<std::string>();
      const int line = entry.first.Mark().line + 1;
      if (const auto [first, added] = lines.emplace(key, line); !added) {
        // YAML forbids it and the Python HSDO's loader (ruamel.yaml) refused it; refused here,
        // an upgrade would stop a deployment whose two values agree (two that differ are
        // refused, below).
        Warn(warnings,
             fmt::format("config file {} line {}: {} is given again (first on line {}): "
                         "the two must agree, and an empty one is ignored",
                         path, line, logging::EscapeControlCharacters(key), first->second));
      }
      const Setting* setting = FindSetting(key);
      if (setting == nullptr) {
        const auto near = NearMiss(key);
        Warn(warnings, fmt::format("config file {} line {}: unknown variable {} (ignored){}", path,
                                   line, logging::EscapeControlCharacters(key),
                                   near ? fmt::format(": did you mean {}?", *near) : ""));
        continue;
      }
      if ((setting->flags & config_detail::kEnvironmentOnly) != 0) {
        Warn(warnings, fmt::format("config file {} line {}: {} is read from the environment only "
                                   "(ignored)",
                                   path, line, key));
        continue;
      }
      auto text = YamlToText(*setting, entry.second);
      if (!text) return text.error();
      if (IsSecret(*setting) && !text->empty()) secrets.push_back(setting->name);
      RawValue raw{std::move(*text), path, key,
                   entry.second.IsScalar() && entry.second.Tag() == "?"};
      const std::string name(setting->name);
      if (const auto it = values.find(name); it != values.end()) {
        if (auto same = CheckSameValue(*setting, it->second, raw); !same) return same.error();
        if (!raw.value.empty()) it->second = std::move(raw);
      } else {
        values[name] = std::move(raw);
      }
    }
    if (!secrets.empty() && ReadableByEveryone(path, st)) {
      Warn(warnings,
           fmt::format("config file {} holds {} and every user can read it: put {} "
                       "into /etc/default/hsdo (mode 600), or make the file readable "
                       "by hsdo's group alone (chgrp hsdo; chmod 640)",
                       path, fmt::join(secrets, ", "), secrets.size() == 1 ? "it" : "them"));
    }
  } catch (const YAML::Exception& e) {
    return MakeError(ErrorCode::kInvalidArgument, "invalid config file {} (line {}): {}", path,
                     e.mark.line + 1, e.msg);
  } catch (const std::exception& e) {
    return MakeError(ErrorCode::kInvalidArgument, "invalid config file {}: {}", path, e.what());
  }
  return values;
}

// The environment over the file: any spelling set in the environment (even to "", which
// means unset) replaces the file's value. An empty one that hides a value of the file is said:
// a blank line of /etc/default/hsdo, or `-e VAR=$UNSET`, silently brought the default back
// (a drain timeout of 0, a looser removal guard).
Result<void> ApplyEnvironment(const Environment& env, RawValues& values,
                              std::vector<std::string>* warnings) {
  for (const auto& setting : SettingsTable()) {
    std::optional<RawValue> chosen;
    std::vector<std::string_view> spellings{setting.name};
    spellings.insert(spellings.end(), setting.aliases.begin(), setting.aliases.end());
    for (const auto spelling : spellings) {
      const auto it = env.find(std::string(spelling));
      if (it == env.end()) continue;
      auto text = EnvironmentText(setting, Trim(it->second));
      if (!text) return text.error();
      RawValue raw{std::move(*text), "the environment", std::string(spelling)};
      if (chosen) {
        if (auto same = CheckSameValue(setting, *chosen, raw); !same) return same.error();
        if (chosen->value.empty()) chosen = std::move(raw);
      } else {
        chosen = std::move(raw);
      }
    }
    if (!chosen) continue;
    const auto file = values.find(std::string(setting.name));
    if (chosen->value.empty() && file != values.end() && !file->second.value.empty()) {
      Warn(warnings,
           fmt::format(
               "{} is set but empty in the environment: it hides {}={} from {}, and the "
               "default{} applies (unset it to use the file's value)",
               chosen->spelling, file->second.spelling, Shown(setting, file->second.value),
               file->second.origin,
               setting.default_text.empty()
                   ? std::string()
                   : fmt::format(" ({})", Shown(setting, std::string(setting.default_text)))));
    }
    values[std::string(setting.name)] = std::move(*chosen);
  }
  return Ok();
}

// The environment holds every program's variables, so an unknown name is said only when it is
// one typo away from a setting: a misspelt HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT would silently
// leave drains unwaited.
void WarnOfMisspeltVariables(const Environment& env, std::vector<std::string>* warnings) {
  for (const auto& [name, value] : env) {
    if (const auto near = NearMiss(name)) {
      Warn(warnings, fmt::format("environment variable {} is not a setting of hsdo (ignored): did "
                                 "you mean {}?",
                                 logging::EscapeControlCharacters(name), *near));
    }
  }
}

const RawValue* Find(const RawValues& values, std::string_view name) {
  const auto it = values.find(name);
  return it == values.end() || it->second.value.empty() ? nullptr : &it->second;
}

}  // namespace

Environment ReadProcessEnvironment() {
  Environment env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string_view text(*entry);
    const auto eq = text.find('=');
    if (eq == std::string_view::npos) continue;
    env.emplace(std::string(text.substr(0, eq)), std::string(text.substr(eq + 1)));
  }
  return env;
}

Result<Config> LoadConfig(const std::string& path, bool path_must_exist, const Environment& env,
                          std::vector<std::string>* warnings, SettingRole running_as) {
  auto file_values = ReadFile(path, path_must_exist, warnings);
  if (!file_values) return file_values.error();
  RawValues values = std::move(*file_values);
  if (auto r = ApplyEnvironment(env, values, warnings); !r) return r.error();
  WarnOfMisspeltVariables(env, warnings);

  Config c;
  c.backend_server_port_given = Find(values, "HAPROXY_BACKEND_SERVER_PORT") != nullptr;
  for (const auto& setting : SettingsTable()) {
    const RawValue* raw = Find(values, setting.name);
    if (raw == nullptr) {
      if (setting.default_text.empty()) continue;
      values[std::string(setting.name)] =
          RawValue{std::string(setting.default_text), "the default", std::string(setting.name)};
      raw = &values[std::string(setting.name)];
    }
    // No CR, LF or other control byte reaches a header, a command or a log line.
    const std::optional<std::string> expected =
        HasControlCharacters(raw->value)
            ? std::optional<std::string>("a value without control characters (CR, LF, tab, ...)")
            : setting.kind.parse(raw->value, c);
    if (!expected) continue;
    const bool others = running_as != SettingRole::kBoth && setting.role != SettingRole::kBoth &&
                        setting.role != running_as;
    if (!others || (!setting.default_text.empty() && setting.kind.parse(setting.default_text, c))) {
      return Invalid(setting, *raw, *expected);
    }
    Warn(warnings, fmt::format("{} (only the {} reads it: this {} goes on {})",
                               Invalid(setting, *raw, *expected).message,
                               running_as == SettingRole::kClient ? "orchestrator" : "agent",
                               running_as == SettingRole::kClient ? "agent" : "orchestrator",
                               setting.default_text.empty()
                                   ? std::string("without it")
                                   : fmt::format("with the default, {}", setting.default_text)));
  }

  // A secret given both ways: the variable wins, as before its file setting existed (a host that
  // exported both, for Consul's own CLI, must not stop at an upgrade: review), and a warning
  // says so.
  const auto prefer_the_variable = [&](std::string_view name, const std::string& value,
                                       std::string& file) {
    if (value.empty() || file.empty()) return;
    Warn(warnings, fmt::format("{0} and {0}_FILE are both set: {0} is used, and the file is not "
                               "read (unset {0} to read the file at each use)",
                               name));
    file.clear();
  };
  if (running_as != SettingRole::kClient && c.server_mode == ServerMode::kConsul) {
    prefer_the_variable("CONSUL_HTTP_TOKEN", c.consul.token, c.consul.token_file);
  }
  if (c.store == StoreKind::kEtcd) {
    prefer_the_variable("ETCD_PASSWORD", c.etcd.password, c.etcd.password_file);
  }

  // AWS_REGION wins, as in the AWS SDKs; the Python HSDO (boto3) read AWS_DEFAULT_REGION only.
  if (const RawValue* region = Find(values, "AWS_REGION"),
      *default_region = Find(values, "AWS_DEFAULT_REGION");
      region != nullptr && default_region != nullptr && region->value != default_region->value) {
    Warn(warnings,
         fmt::format("AWS_REGION={} ({}) and AWS_DEFAULT_REGION={} ({}) differ: hsdo "
                     "uses AWS_REGION, as the AWS SDKs do, where the Python HSDO used "
                     "AWS_DEFAULT_REGION",
                     region->value, region->origin, default_region->value, default_region->origin));
  }

  // Defaults that depend on other settings.
  if (Find(values, "STORE") == nullptr) {
    // ETCD_ENDPOINTS alone does not choose etcd: a deployment that had it set for nothing
    // would move to another store. Said, not refused: such a deployment (a DynamoDB fleet with
    // a stray ETCD_ENDPOINTS) works, and its agents must not stop at an upgrade; and an
    // orchestrator never makes a store (`hsdo init-table` does), so none starts on a new one.
    if (const RawValue* endpoints = Find(values, "ETCD_ENDPOINTS"); endpoints != nullptr) {
      Warn(warnings, fmt::format("ETCD_ENDPOINTS is set (from {}) but STORE is not, so the store "
                                 "is {}: set STORE=etcd to use etcd, or remove ETCD_ENDPOINTS",
                                 endpoints->origin,
                                 c.dynamodb_table_name.empty() ? "SQLite (SQLITE_PATH)"
                                                               : "DynamoDB (DYNAMODB_TABLE_NAME)"));
    }
    // Likewise an SQLite file of its own given with a table name: DYNAMODB_TABLE_NAME added to
    // a shared env.yaml moved every process restarted after it off that file, without a word
    // (reconfiguration review). The default path (conf/env.yaml spells it out) says nothing.
    const RawValue* sqlite_path = Find(values, "SQLITE_PATH");
    if (sqlite_path != nullptr && !c.dynamodb_table_name.empty() &&
        c.sqlite_path != Config{}.sqlite_path) {
      Warn(warnings, fmt::format("SQLITE_PATH is set (from {}) but STORE is not, and "
                                 "DYNAMODB_TABLE_NAME is, so the store is DynamoDB: set "
                                 "STORE=sqlite to use SQLite, or remove SQLITE_PATH",
                                 sqlite_path->origin));
    }
    c.store = c.dynamodb_table_name.empty() ? StoreKind::kSqlite : StoreKind::kDynamoDb;
  }
  // Only on DynamoDB, the one store the Python HSDO had.
  for (const std::string_view name : kSeedSwitches) {
    if (c.store != StoreKind::kDynamoDb) break;
    const RawValue* raw = Find(values, name);
    const auto on = [](std::string_view text) {
      return text.size() == 4 && std::equal(text.begin(), text.end(), "true", [](char a, char b) {
               return std::tolower(static_cast<unsigned char>(a)) == b;
             });
    };
    if (raw == nullptr || !on(raw->value) || (raw->value == "true" && !raw->unquoted)) {
      continue;
    }
    Warn(warnings,
         fmt::format("{}={} ({}{}) is on, but Python HSDO agents reading this table would take it "
                     "as off (they take only the quoted text \"true\" as on): while both serve, "
                     "write \"true\" or \"false\" (quoted) to say which is meant",
                     raw->spelling, raw->value, raw->origin,
                     raw->unquoted ? ", an unquoted YAML boolean" : ""));
  }
  // The AZ limiter's settings given while it is off: set for it, the limiter was meant (a
  // forgotten AZ_LIMITER=true puts every target in the primary backends). Said, not refused.
  if (!c.az_limiter) {
    std::vector<std::string> given;
    for (const char* name :
         {"CLIENT_ASG_NAMES", "HAPROXY_FALLBACK_BACKEND_NAME", "HAPROXY_FALLBACK_BACKEND_BASE_NAME",
          "HAPROXY_FALLBACK_BACKEND_SERVER_PORT"}) {
      if (const RawValue* raw = Find(values, name)) given.push_back(raw->spelling);
    }
    const RawValue* all = Find(values, "ALL_SERVERS_IN_FALLBACK_BACKEND");
    if (c.all_servers_in_fallback_backend && all != nullptr) given.push_back(all->spelling);
    if (!given.empty()) {
      Warn(warnings, fmt::format("{} {} set but AZ_LIMITER is false, so {} no effect: set "
                                 "AZ_LIMITER=true to route by availability zone",
                                 fmt::join(given, ", "), given.size() == 1 ? "is" : "are",
                                 given.size() == 1 ? "it has" : "they have"));
    }
  }
  if (Find(values, "ETCD_PREFIX") == nullptr) {
    c.etcd.prefix =
        "/hsdo/" + (c.dynamodb_table_name.empty() ? std::string("default") : c.dynamodb_table_name);
  }
  if (c.min_weight > c.max_weight && running_as != SettingRole::kClient) {  // the ramp's
    return Invalid(*FindSetting("HAPROXY_BACKEND_SERVER_MIN_WEIGHT"),
                   values["HAPROXY_BACKEND_SERVER_MIN_WEIGHT"],
                   fmt::format("a weight <= HAPROXY_BACKEND_SERVER_MAX_WEIGHT ({})", c.max_weight));
  }
  if (Find(values, "HAPROXY_BACKEND_LIST") == nullptr && !c.backend_name.empty()) {
    c.backends.push_back({c.backend_name, c.backend_base_name, c.backend_server_port});
  }
  // The fallback's targets take the primaries' port while they share one, else
  // HAPROXY_BACKEND_SERVER_PORT: a backend of another port added to the list moved every
  // fallback server to that port (80 by default), on every node. Said, when no primary has
  // that port, until the fallback's port is given (not refused: a deployment whose targets
  // listen there works, and must not stop at an upgrade).
  const auto has_port = [&](std::uint16_t port) {
    return std::any_of(c.backends.begin(), c.backends.end(),
                       [&](const BackendConfig& b) { return b.port == port; });
  };
  if (c.az_limiter && !c.fallback_backend_name.empty() && c.fallback_backend_server_port == 0 &&
      !c.backends.empty() && c.FallbackBackend()->port != c.backends.front().port &&
      !has_port(c.backend_server_port)) {
    std::vector<std::string> ports;
    for (const BackendConfig& backend : c.backends) {
      ports.push_back(fmt::format("{} {}", backend.name, backend.port));
    }
    Warn(warnings,
         fmt::format("AZ_LIMITER: the primary backends' ports differ ({}), so the fallback "
                     "backend {}'s servers take HAPROXY_BACKEND_SERVER_PORT={}{}: set "
                     "HAPROXY_FALLBACK_BACKEND_SERVER_PORT to the port they listen on",
                     fmt::join(ports, ", "), c.fallback_backend_name, c.backend_server_port,
                     c.backend_server_port_given ? "" : " (its default)"));
  }
  return c;
}

ConfigLocation LocateConfigFile(const std::string& flag_path, const Environment& env,
                                const std::function<bool(const std::string&)>& exists) {
  if (!flag_path.empty()) return {flag_path, true, "--config"};
  if (const auto it = env.find("HSDO_CONFIG"); it != env.end() && !Trim(it->second).empty()) {
    return {Trim(it->second), true, "HSDO_CONFIG"};
  }
  for (const char* path : {"conf/env.yaml", "/etc/hsdo/env.yaml"}) {
    if (exists(path)) return {path, false, "default"};
  }
  return {"", false, "default"};
}

std::vector<SettingInfo> DescribeSettings() {
  std::vector<SettingInfo> out;
  for (const auto& s : SettingsTable()) {
    out.push_back(
        SettingInfo{.name = s.name,
                    .aliases = s.aliases,
                    .default_text = s.default_text,
                    .doc = s.doc,
                    .role = s.role,
                    .secret = IsSecret(s),
                    .environment_only = (s.flags & config_detail::kEnvironmentOnly) != 0});
  }
  return out;
}

std::string SettingsHelp() {
  std::string out;
  const auto section = [&](std::string_view title, auto&& wanted) {
    out += fmt::format("\n{}:\n", title);
    for (const auto& s : SettingsTable()) {
      if (!wanted(s)) continue;
      out += fmt::format("  {}{}{}  {}", s.name, s.default_text.empty() ? "" : "=", s.default_text,
                         s.doc);
      for (std::size_t i = 0; i < s.aliases.size(); ++i) {
        out += fmt::format("{}{}", i == 0 ? " (also " : ", ", s.aliases[i]);
      }
      out += s.aliases.empty() ? "\n" : ")\n";
    }
  };
  const auto in_file = [](const Setting& s, SettingRole role) {
    return s.role == role && (s.flags & config_detail::kEnvironmentOnly) == 0;
  };
  section("Variables of the orchestrator (--server)",
          [&](const Setting& s) { return in_file(s, SettingRole::kServer); });
  section("Variables of the agent (--client)",
          [&](const Setting& s) { return in_file(s, SettingRole::kClient); });
  section("Variables of both", [&](const Setting& s) { return in_file(s, SettingRole::kBoth); });
  section("AWS SDK variables (environment only)",
          [](const Setting& s) { return (s.flags & config_detail::kEnvironmentOnly) != 0; });
  return out;
}

std::vector<std::pair<std::string, std::string>> EffectiveSettings(const Config& config) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& s : SettingsTable()) {
    std::string value = s.kind.print(config);
    if (IsSecret(s) && !value.empty()) value = "<hidden>";
    if (HidesItsPath(s, value)) value = kHiddenPath;
    // (The metadata and container endpoints too, which no URL check reads.)
    if (MayHoldACredential(s, value)) value = kHiddenUrl;
    out.emplace_back(std::string(s.name), std::move(value));
  }
  return out;
}

std::optional<BackendConfig> Config::FallbackBackend() const {
  if (fallback_backend_name.empty()) return std::nullopt;
  // The fallback holds the same targets as the primaries, so it takes their port when they
  // agree on one (HAPROXY_BACKEND_LIST=app:srv:8080 and no HAPROXY_BACKEND_SERVER_PORT gave
  // every fallback server port 80, and every failed-over request failed).
  if (fallback_backend_server_port != 0) {
    return BackendConfig{fallback_backend_name, fallback_backend_base_name,
                         fallback_backend_server_port};
  }
  std::uint16_t port = backend_server_port;
  if (!backends.empty() &&
      std::all_of(backends.begin(), backends.end(),
                  [&](const BackendConfig& b) { return b.port == backends.front().port; })) {
    port = backends.front().port;
  }
  return BackendConfig{fallback_backend_name, fallback_backend_base_name, port};
}

namespace {
Error Missing(std::string_view what) {
  return MakeError(ErrorCode::kInvalidArgument, "invalid configuration: {}", what);
}

// A secret's file (read at each use, so it may change later), at start: one that cannot hold a
// secret is a configuration error; one not written yet (missing or empty) is not, since a
// Vault or Consul agent's template may render it after hsdo starts (an exit 2 there was final:
// the units do not restart on it). Requests fail, logged, until it is.
Result<void> CheckSecretFile(const std::string& path, std::string_view variable) {
  if (path.empty()) return Ok();
  auto secret = ReadSecretFile(path, variable);
  if (!secret && secret.error().code != ErrorCode::kNotFound) return secret.error();
  return Ok();
}
}  // namespace

std::chrono::milliseconds EffectiveLeaderLease(const Config& c) {
  return std::max(c.leader_lease, 3 * c.interval);
}

Result<void> ValidateForServer(const Config& c) {
  switch (c.server_mode) {
    case ServerMode::kNone:
      return Missing("SERVER_MODE is not set: expected aws, consul or file for --server");
    case ServerMode::kAws:
      if (c.server_asg_names.empty()) {
        return Missing("SERVER_ASG_NAMES is empty: SERVER_MODE=aws needs at least one ASG name");
      }
      break;
    case ServerMode::kConsul:
      if (c.consul.api_url.empty()) {
        return Missing("CONSUL_API_URL is not set: SERVER_MODE=consul needs Consul's address");
      }
      if (c.consul.service_names.empty()) {
        return Missing("CONSUL_SERVICE_NAME is empty: SERVER_MODE=consul needs a service name");
      }
      // Checked here, for the one role and mode that reads them: an agent, or an orchestrator
      // of another source, sharing this configuration exited 2 on a file it never reads.
      for (const auto& [name, path] :
           {std::pair<std::string_view, const std::string&>{"CONSUL_CACERT", c.consul.ca_cert},
            {"CONSUL_CLIENT_CERT", c.consul.client_cert},
            {"CONSUL_CLIENT_KEY", c.consul.client_key}}) {
        if (struct stat st{};
            !path.empty() && (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) ||
                              access(path.c_str(), R_OK) != 0)) {
          return Missing(fmt::format("{}=\"{}\": expected a readable file (SERVER_MODE=consul)",
                                     name, logging::EscapeControlCharacters(path)));
        }
      }
      if (auto token = CheckSecretFile(c.consul.token_file, "CONSUL_HTTP_TOKEN_FILE"); !token) {
        return Missing(fmt::format("{} (SERVER_MODE=consul)", token.error().message));
      }
      break;
    case ServerMode::kFile:
      if (c.server_file_path.empty()) {
        return Missing("SERVER_FILE_PATH is not set: SERVER_MODE=file needs a targets file");
      }
      // Later the file may vanish for a while (an editor's rename); at start it is a typo.
      if (struct stat st{}; stat(c.server_file_path.c_str(), &st) != 0 || S_ISDIR(st.st_mode)) {
        return Missing(fmt::format(
            "SERVER_FILE_PATH=\"{}\": the targets file does not exist (SERVER_MODE=file)",
            logging::EscapeControlCharacters(c.server_file_path)));
      }
      break;
  }
  return Ok();
}

Result<void> ValidateForClient(const Config& c) {
  if (c.backends.empty()) {
    return Missing(
        "no backend: set HAPROXY_BACKEND_NAME and HAPROXY_BACKEND_BASE_NAME, or "
        "HAPROXY_BACKEND_LIST");
  }
  std::set<std::string_view> names;
  for (const auto& backend : c.backends) {
    if (backend.base_name.empty()) {
      return Missing(fmt::format(
          "HAPROXY_BACKEND_BASE_NAME is not set: backend {} needs the server-template base name",
          backend.name));
    }
    // Managed twice, a backend would get each slot's operations twice in one batch.
    if (!names.insert(backend.name).second) {
      return Missing(
          fmt::format("HAPROXY_BACKEND_LIST names backend {} twice: list each once", backend.name));
    }
  }
  if (c.az_limiter) {
    if (c.fallback_backend_name.empty() || c.fallback_backend_base_name.empty()) {
      return Missing(
          "AZ_LIMITER=true needs HAPROXY_FALLBACK_BACKEND_NAME and "
          "HAPROXY_FALLBACK_BACKEND_BASE_NAME");
    }
    // Primary (this AZ's servers) and fallback (the others) at once, the backend's servers
    // would change places at every full sync, on every node.
    if (names.contains(c.fallback_backend_name)) {
      return Missing(fmt::format(
          "HAPROXY_FALLBACK_BACKEND_NAME={} is also a primary backend: the AZ limiter needs a "
          "fallback backend of its own",
          c.fallback_backend_name));
    }
    if (c.client_asg_names.empty()) {
      return Missing("AZ_LIMITER=true needs CLIENT_ASG_NAMES (the groups of this node's AZ)");
    }
  }
  return Ok();
}

Result<void> ValidateForStore(const Config& c) {
  if (c.store == StoreKind::kDynamoDb && c.dynamodb_table_name.empty()) {
    return Missing("STORE=dynamodb needs DYNAMODB_TABLE_NAME");
  }
  if (c.store == StoreKind::kSqlite && c.sqlite_path.empty()) {
    return Missing("STORE=sqlite needs SQLITE_PATH");
  }
  if (c.store == StoreKind::kEtcd && c.etcd.endpoints.empty()) {
    return Missing("STORE=etcd needs ETCD_ENDPOINTS (e.g. http://127.0.0.1:2379)");
  }
  if (c.store == StoreKind::kEtcd && c.etcd.username.empty() && !c.etcd.password.empty()) {
    return Missing("ETCD_PASSWORD is set without ETCD_USERNAME");
  }
  if (c.store == StoreKind::kEtcd && !c.etcd.password_file.empty()) {
    if (c.etcd.username.empty()) return Missing("ETCD_PASSWORD_FILE is set without ETCD_USERNAME");
    if (auto password = CheckSecretFile(c.etcd.password_file, "ETCD_PASSWORD_FILE"); !password) {
      return Missing(fmt::format("{} (STORE=etcd)", password.error().message));
    }
  }
  return Ok();
}

std::string_view ToString(ServerMode mode) {
  switch (mode) {
    case ServerMode::kNone:
      return "none";
    case ServerMode::kAws:
      return "aws";
    case ServerMode::kConsul:
      return "consul";
    case ServerMode::kFile:
      return "file";
  }
  return "?";
}

std::string StoreLocation(const Config& config) {
  switch (config.store) {
    case StoreKind::kSqlite:
      return config.sqlite_path;
    case StoreKind::kDynamoDb:
      return config.dynamodb_table_name;
    case StoreKind::kEtcd:
      return fmt::format("{} under {}", fmt::join(config.etcd.endpoints, ","), config.etcd.prefix);
  }
  return {};
}

std::string_view ToString(StoreKind kind) {
  switch (kind) {
    case StoreKind::kDynamoDb:
      return "dynamodb";
    case StoreKind::kSqlite:
      return "sqlite";
    case StoreKind::kEtcd:
      return "etcd";
  }
  return "?";
}

std::string_view ToString(LogFormat format) { return format == LogFormat::kJson ? "json" : "text"; }

}  // namespace hsdo
