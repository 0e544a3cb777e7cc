#include "config/config.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <fstream>
#include <set>

#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include "common/validate.h"

extern char** environ;  // NOLINT: POSIX

namespace hsdo {

namespace {

// The variables of the seed README and hsdo's own. Anything else in the config file is
// reported as unknown (a typo would otherwise be silently ignored).
const std::set<std::string, std::less<>> kKnownVariables = {
    // Seed: server only.
    "SERVER_ASG_NAMES", "CONSUL_API_URL", "CONSUL_SERVICE_NAME",
    "HAPROXY_BACKEND_SERVER_MIN_WEIGHT", "HAPROXY_BACKEND_SERVER_MAX_WEIGHT",
    "HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT", "HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT_INTERVAL",
    "SERVER_MODE",
    // Seed: client only.
    "CLIENT_ASG_NAMES", "HAPROXY_SOCKET_PATH", "HAPROXY_BACKEND_NAME", "HAPROXY_BACKEND_BASE_NAME",
    "HAPROXY_FALLBACK_BACKEND_NAME", "HAPROXY_FALLBACK_BACKEND_BASE_NAME",
    "HAPROXY_BACKEND_SERVER_PORT", "AZ_LIMITER", "ALL_SERVERS_IN_FALLBACK_BACKEND",
    // Seed: both.
    "INTERVAL", "HAPROXY_BACKEND_SERVERS_LIST_SIZE", "DEBUG", "DYNAMODB_TABLE_NAME",
    "AWS_DEFAULT_REGION", "EXPORTER_PORT",
    // hsdo.
    "SERVER_FILE_PATH", "EXPORTER_ADDRESS", "STORE", "SQLITE_PATH", "HAPROXY_BACKEND_LIST",
    "CONSUL_HTTP_TOKEN", "CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY",
    "CONSUL_DATACENTER", "CONSUL_SERVICE_TAG", "CONSUL_AZ_META_KEY", "CONSUL_PASSING_ONLY",
    "MAX_REMOVED_FRACTION", "MASS_REMOVAL_DELAY", "LEADER_LEASE_SECONDS",
    "HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT", "HAPROXY_FULL_SYNC_INTERVAL", "HSDO_NODE_NAME",
    "LOG_FORMAT", "ETCD_ENDPOINTS", "ETCD_PREFIX", "ETCD_USERNAME", "ETCD_PASSWORD", "ETCD_CACERT",
    "ETCD_CERT", "ETCD_KEY"};

constexpr int kMaxWeight = 256;  // HAProxy's absolute weight range is 0..256
constexpr int kMaxListSize = 100'000;

std::string Trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  const auto last = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(first, last - first + 1));
}

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::vector<std::string> SplitList(std::string_view text) {
  std::vector<std::string> items;
  std::size_t start = 0;
  while (start <= text.size()) {
    const auto comma = text.find(',', start);
    const auto end = comma == std::string_view::npos ? text.size() : comma;
    if (auto item = Trim(text.substr(start, end - start)); !item.empty()) {
      items.push_back(std::move(item));
    }
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return items;
}

struct RawValue {
  std::string value;
  std::string origin;  // "the environment" or the file's path
};

// Reads the raw settings: the file first, then the environment over it.
class Settings {
 public:
  explicit Settings(std::map<std::string, RawValue> values) : values_(std::move(values)) {}

  // The first validation error, if any; every getter is a no-op after it.
  const std::optional<Error>& error() const { return error_; }
  bool Has(std::string_view name) const { return Find(name) != nullptr; }

  std::string String(std::string_view name, std::string fallback = {}) {
    const RawValue* raw = Find(name);
    return raw == nullptr ? fallback : raw->value;
  }

  std::vector<std::string> List(std::string_view name) {
    const RawValue* raw = Find(name);
    return raw == nullptr ? std::vector<std::string>{} : SplitList(raw->value);
  }

  long Integer(std::string_view name, long fallback, long min, long max) {
    const RawValue* raw = Find(name);
    if (raw == nullptr) return fallback;
    long value = 0;
    const auto& text = raw->value;
    const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || ptr != text.data() + text.size() || value < min || value > max) {
      Fail(*raw, name, fmt::format("an integer from {} to {}", min, max));
      return fallback;
    }
    return value;
  }

  // A duration given in seconds (fractions allowed). `allow_zero` permits 0.
  std::chrono::milliseconds Seconds(std::string_view name, std::chrono::milliseconds fallback,
                                    bool allow_zero) {
    const RawValue* raw = Find(name);
    if (raw == nullptr) return fallback;
    double seconds = 0;
    const auto& text = raw->value;
    const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), seconds);
    const bool valid = ec == std::errc() && ptr == text.data() + text.size() &&
                       std::isfinite(seconds) && (allow_zero ? seconds >= 0 : seconds > 0) &&
                       seconds <= 86400.0 * 365;
    if (!valid || (!allow_zero && seconds < 0.001)) {
      Fail(*raw, name,
           allow_zero ? "a number of seconds >= 0" : "a positive number of seconds (>= 0.001)");
      return fallback;
    }
    return std::chrono::milliseconds(std::llround(seconds * 1000));
  }

  // A number from `min` to `max` (fractions allowed).
  double Fraction(std::string_view name, double fallback, double min, double max) {
    const RawValue* raw = Find(name);
    if (raw == nullptr) return fallback;
    double value = 0;
    const auto& text = raw->value;
    const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || ptr != text.data() + text.size() || !std::isfinite(value) ||
        value < min || value > max) {
      Fail(*raw, name, fmt::format("a number from {} to {}", min, max));
      return fallback;
    }
    return value;
  }

  bool Boolean(std::string_view name, bool fallback) {
    const RawValue* raw = Find(name);
    if (raw == nullptr) return fallback;
    const std::string value = Lower(raw->value);
    if (value == "true") return true;
    if (value == "false") return false;
    Fail(*raw, name, "true or false");
    return fallback;
  }

  std::uint16_t Port(std::string_view name, std::uint16_t fallback) {
    return static_cast<std::uint16_t>(Integer(name, fallback, 1, 65535));
  }

  // Reports `name`'s value as invalid, expecting `expected`.
  void Fail(std::string_view name, std::string_view expected) {
    if (const RawValue* raw = Find(name)) {
      Fail(*raw, name, expected);
    } else if (!error_) {
      error_ = MakeError(ErrorCode::kInvalidArgument, "invalid configuration: {} is not set: {}",
                         name, expected);
    }
  }

 private:
  const RawValue* Find(std::string_view name) const {
    const auto it = values_.find(std::string(name));
    // The seed documents unset values as " ": an empty value means "not set".
    return it == values_.end() || it->second.value.empty() ? nullptr : &it->second;
  }

  void Fail(const RawValue& raw, std::string_view name, std::string_view expected) {
    if (error_) return;
    error_ = MakeError(ErrorCode::kInvalidArgument,
                       "invalid configuration: {}=\"{}\" (from {}): expected {}", name, raw.value,
                       raw.origin, expected);
  }

  std::map<std::string, RawValue> values_;
  std::optional<Error> error_;
};

// YAML scalar → text; a sequence of scalars → comma-separated text; HAPROXY_BACKEND_LIST
// may also be a sequence of maps {name, base_name, port}.
Result<std::string> YamlToText(const std::string& key, const YAML::Node& node) {
  if (node.IsNull()) return std::string{};
  if (node.IsScalar()) return Trim(node.Scalar());
  if (node.IsSequence()) {
    std::vector<std::string> items;
    for (const auto& item : node) {
      if (item.IsScalar()) {
        items.push_back(Trim(item.Scalar()));
      } else if (key == "HAPROXY_BACKEND_LIST" && item.IsMap()) {
        const auto field = [&](const char* name) {
          return item[name] ? Trim(item[name].as<std::string>()) : std::string{};
        };
        std::string entry = field("name") + ":" + field("base_name");
        if (item["port"]) entry += ":" + field("port");
        items.push_back(std::move(entry));
      } else {
        return MakeError(ErrorCode::kInvalidArgument,
                         "invalid configuration: {} (line {}): expected a list of values", key,
                         item.Mark().line + 1);
      }
    }
    std::string joined;
    for (const auto& item : items) joined += (joined.empty() ? "" : ",") + item;
    return joined;
  }
  return MakeError(ErrorCode::kInvalidArgument,
                   "invalid configuration: {} (line {}): expected a value or a list", key,
                   node.Mark().line + 1);
}

Result<std::map<std::string, RawValue>> ReadFile(const std::string& path, bool must_exist) {
  std::map<std::string, RawValue> values;
  std::ifstream in(path);
  if (!in) {
    if (must_exist) {
      return MakeError(ErrorCode::kNotFound, "cannot read config file {}", path);
    }
    return values;
  }
  try {
    const YAML::Node root = YAML::Load(in);
    if (root.IsNull()) return values;
    if (!root.IsMap()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "invalid config file {}: expected a map of VARIABLE: value", path);
    }
    for (const auto& entry : root) {
      const auto key = entry.first.as<std::string>();
      if (!kKnownVariables.contains(key)) {
        spdlog::warn("config file {} line {}: unknown variable {} (ignored)", path,
                     entry.first.Mark().line + 1, key);
        continue;
      }
      auto text = YamlToText(key, entry.second);
      if (!text) return text.error();
      values[key] = RawValue{std::move(*text), path};
    }
  } catch (const YAML::Exception& e) {
    return MakeError(ErrorCode::kInvalidArgument, "invalid config file {} (line {}): {}", path,
                     e.mark.line + 1, e.msg);
  }
  return values;
}

std::string EnvOr(const Environment& env, const char* name) {
  const auto it = env.find(name);
  return it == env.end() ? std::string{} : Trim(it->second);
}

AwsConfig ReadAwsEnvironment(const Environment& env) {
  AwsConfig aws;
  aws.access_key_id = EnvOr(env, "AWS_ACCESS_KEY_ID");
  aws.secret_access_key = EnvOr(env, "AWS_SECRET_ACCESS_KEY");
  aws.session_token = EnvOr(env, "AWS_SESSION_TOKEN");
  aws.profile = EnvOr(env, "AWS_PROFILE");
  aws.shared_credentials_file = EnvOr(env, "AWS_SHARED_CREDENTIALS_FILE");
  aws.config_file = EnvOr(env, "AWS_CONFIG_FILE");
  aws.home = EnvOr(env, "HOME");
  aws.web_identity_token_file = EnvOr(env, "AWS_WEB_IDENTITY_TOKEN_FILE");
  aws.role_arn = EnvOr(env, "AWS_ROLE_ARN");
  aws.role_session_name = EnvOr(env, "AWS_ROLE_SESSION_NAME");
  aws.container_credentials_relative_uri = EnvOr(env, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
  aws.container_credentials_full_uri = EnvOr(env, "AWS_CONTAINER_CREDENTIALS_FULL_URI");
  aws.container_authorization_token = EnvOr(env, "AWS_CONTAINER_AUTHORIZATION_TOKEN");
  aws.container_authorization_token_file = EnvOr(env, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
  aws.ec2_metadata_disabled = Lower(EnvOr(env, "AWS_EC2_METADATA_DISABLED")) == "true";
  aws.ec2_metadata_service_endpoint = EnvOr(env, "AWS_EC2_METADATA_SERVICE_ENDPOINT");
  aws.region = EnvOr(env, "AWS_REGION");
  aws.endpoint_url = EnvOr(env, "AWS_ENDPOINT_URL");
  aws.endpoint_url_dynamodb = EnvOr(env, "AWS_ENDPOINT_URL_DYNAMODB");
  aws.endpoint_url_auto_scaling = EnvOr(env, "AWS_ENDPOINT_URL_AUTO_SCALING");
  aws.endpoint_url_ec2 = EnvOr(env, "AWS_ENDPOINT_URL_EC2");
  aws.endpoint_url_sts = EnvOr(env, "AWS_ENDPOINT_URL_STS");
  return aws;
}

// "backend:base[:port],..." → backends, validated.
Result<std::vector<BackendConfig>> ParseBackendList(const std::string& text,
                                                    std::uint16_t default_port) {
  std::vector<BackendConfig> backends;
  for (const auto& item : SplitList(text)) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    while (true) {
      const auto colon = item.find(':', start);
      parts.push_back(Trim(item.substr(start, colon - start)));
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
    const auto invalid = [&] {
      return MakeError(ErrorCode::kInvalidArgument,
                       "invalid configuration: HAPROXY_BACKEND_LIST item \"{}\": expected "
                       "backend:base_name:port (names of [A-Za-z0-9_.-], port 1-65535)",
                       item);
    };
    if (parts.size() < 2 || parts.size() > 3) return invalid();
    BackendConfig backend{parts[0], parts[1], default_port};
    // ':' is legal in HAProxy names but is our separator here, so the list form excludes it.
    if (!IsValidHaproxyName(backend.name) || !IsValidHaproxyName(backend.base_name)) {
      return invalid();
    }
    if (parts.size() == 3) {
      int port = 0;
      const auto& p = parts[2];
      const auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
      if (ec != std::errc() || ptr != p.data() + p.size() || port < 1 || port > 65535) {
        return invalid();
      }
      backend.port = static_cast<std::uint16_t>(port);
    }
    backends.push_back(std::move(backend));
  }
  return backends;
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

Result<Config> LoadConfig(const std::string& path, bool path_must_exist, const Environment& env) {
  auto file_values = ReadFile(path, path_must_exist);
  if (!file_values) return file_values.error();
  auto values = std::move(*file_values);
  for (const auto& name : kKnownVariables) {
    if (const auto it = env.find(name); it != env.end()) {
      values[name] = RawValue{Trim(it->second), "the environment"};
    }
  }
  Settings s(std::move(values));
  Config c;

  // Both roles.
  c.interval = s.Seconds("INTERVAL", c.interval, /*allow_zero=*/false);
  c.list_size = static_cast<int>(
      s.Integer("HAPROXY_BACKEND_SERVERS_LIST_SIZE", c.list_size, 1, kMaxListSize));
  c.debug = s.Boolean("DEBUG", c.debug);
  c.dynamodb_table_name = s.String("DYNAMODB_TABLE_NAME");
  c.exporter_port = s.Port("EXPORTER_PORT", c.exporter_port);
  c.exporter_address = s.String("EXPORTER_ADDRESS", c.exporter_address);
  if (const auto ip = CanonicalIp(c.exporter_address)) {
    c.exporter_address = *ip;
  } else {
    s.Fail("EXPORTER_ADDRESS", "an IPv4 or IPv6 address to listen on");
  }
  c.sqlite_path = s.String("SQLITE_PATH", c.sqlite_path);
  c.store = c.dynamodb_table_name.empty() ? StoreKind::kSqlite : StoreKind::kDynamoDb;
  if (s.Has("STORE")) {
    const auto store = Lower(s.String("STORE"));
    if (store == "dynamodb") {
      c.store = StoreKind::kDynamoDb;
    } else if (store == "sqlite") {
      c.store = StoreKind::kSqlite;
    } else if (store == "etcd") {
      c.store = StoreKind::kEtcd;
    } else {
      s.Fail("STORE", "dynamodb, sqlite or etcd");
    }
  }
  c.etcd.endpoints = s.List("ETCD_ENDPOINTS");
  for (auto& endpoint : c.etcd.endpoints) {
    if (!endpoint.starts_with("http://") && !endpoint.starts_with("https://")) {
      s.Fail("ETCD_ENDPOINTS", "a comma-separated list of http:// or https:// URLs");
    }
    while (endpoint.ends_with('/')) endpoint.pop_back();
  }
  c.etcd.prefix = s.String(
      "ETCD_PREFIX",
      "/hsdo/" + (c.dynamodb_table_name.empty() ? std::string("default") : c.dynamodb_table_name));
  c.etcd.username = s.String("ETCD_USERNAME");
  c.etcd.password = s.String("ETCD_PASSWORD");
  c.etcd.ca_cert = s.String("ETCD_CACERT");
  c.etcd.cert = s.String("ETCD_CERT");
  c.etcd.key = s.String("ETCD_KEY");
  if (s.Has("LOG_FORMAT")) {
    const auto format = Lower(s.String("LOG_FORMAT"));
    if (format == "text") {
      c.log_format = LogFormat::kText;
    } else if (format == "json") {
      c.log_format = LogFormat::kJson;
    } else {
      s.Fail("LOG_FORMAT", "text or json");
    }
  }

  // Server.
  if (s.Has("SERVER_MODE")) {
    const auto mode = Lower(s.String("SERVER_MODE"));
    if (mode == "aws") {
      c.server_mode = ServerMode::kAws;
    } else if (mode == "consul") {
      c.server_mode = ServerMode::kConsul;
    } else if (mode == "file") {
      c.server_mode = ServerMode::kFile;
    } else {
      s.Fail("SERVER_MODE", "aws, consul or file");
    }
  }
  c.server_asg_names = s.List("SERVER_ASG_NAMES");
  c.server_file_path = s.String("SERVER_FILE_PATH");
  c.min_weight =
      static_cast<int>(s.Integer("HAPROXY_BACKEND_SERVER_MIN_WEIGHT", c.min_weight, 0, kMaxWeight));
  c.max_weight =
      static_cast<int>(s.Integer("HAPROXY_BACKEND_SERVER_MAX_WEIGHT", c.max_weight, 1, kMaxWeight));
  c.increase_weight = static_cast<int>(
      s.Integer("HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT", c.increase_weight, 1, kMaxWeight));
  c.increase_weight_interval = s.Seconds("HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT_INTERVAL",
                                         c.increase_weight_interval, /*allow_zero=*/true);
  if (!s.error() && c.min_weight > c.max_weight) {
    s.Fail("HAPROXY_BACKEND_SERVER_MIN_WEIGHT",
           fmt::format("a weight <= HAPROXY_BACKEND_SERVER_MAX_WEIGHT ({})", c.max_weight));
  }
  c.max_removed_fraction = s.Fraction("MAX_REMOVED_FRACTION", c.max_removed_fraction, 0.0, 1.0);
  c.mass_removal_delay = s.Seconds("MASS_REMOVAL_DELAY", c.mass_removal_delay, /*allow_zero=*/true);
  c.leader_lease = s.Seconds("LEADER_LEASE_SECONDS", c.leader_lease, /*allow_zero=*/false);
  c.drain_timeout =
      s.Seconds("HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT", c.drain_timeout, /*allow_zero=*/true);
  c.consul.api_url = s.String("CONSUL_API_URL");
  if (!c.consul.api_url.empty() && !c.consul.api_url.starts_with("http://") &&
      !c.consul.api_url.starts_with("https://")) {
    s.Fail("CONSUL_API_URL", "an http:// or https:// URL");
  }
  while (c.consul.api_url.ends_with('/')) c.consul.api_url.pop_back();
  c.consul.service_names = s.List("CONSUL_SERVICE_NAME");
  c.consul.token = s.String("CONSUL_HTTP_TOKEN");
  c.consul.ca_cert = s.String("CONSUL_CACERT");
  c.consul.client_cert = s.String("CONSUL_CLIENT_CERT");
  c.consul.client_key = s.String("CONSUL_CLIENT_KEY");
  c.consul.datacenter = s.String("CONSUL_DATACENTER");
  c.consul.tag = s.String("CONSUL_SERVICE_TAG");
  c.consul.az_meta_key = s.String("CONSUL_AZ_META_KEY");
  c.consul.passing_only = s.Boolean("CONSUL_PASSING_ONLY", c.consul.passing_only);

  // Client.
  c.client_asg_names = s.List("CLIENT_ASG_NAMES");
  c.haproxy_socket_path = s.String("HAPROXY_SOCKET_PATH", c.haproxy_socket_path);
  c.backend_name = s.String("HAPROXY_BACKEND_NAME");
  c.backend_base_name = s.String("HAPROXY_BACKEND_BASE_NAME");
  c.backend_server_port = s.Port("HAPROXY_BACKEND_SERVER_PORT", c.backend_server_port);
  c.fallback_backend_name = s.String("HAPROXY_FALLBACK_BACKEND_NAME");
  c.fallback_backend_base_name = s.String("HAPROXY_FALLBACK_BACKEND_BASE_NAME");
  c.haproxy_full_sync_interval =
      s.Seconds("HAPROXY_FULL_SYNC_INTERVAL", c.haproxy_full_sync_interval, /*allow_zero=*/false);
  c.node_name = s.String("HSDO_NODE_NAME");
  c.az_limiter = s.Boolean("AZ_LIMITER", c.az_limiter);
  c.all_servers_in_fallback_backend =
      s.Boolean("ALL_SERVERS_IN_FALLBACK_BACKEND", c.all_servers_in_fallback_backend);
  for (const char* name : {"HAPROXY_BACKEND_NAME", "HAPROXY_BACKEND_BASE_NAME",
                           "HAPROXY_FALLBACK_BACKEND_NAME", "HAPROXY_FALLBACK_BACKEND_BASE_NAME"}) {
    if (s.Has(name) && !IsValidHaproxyName(s.String(name))) {
      s.Fail(name, "an HAProxy name: 1-64 of A-Z a-z 0-9 _ . : -");
    }
  }
  if (s.error()) return *s.error();

  if (s.Has("HAPROXY_BACKEND_LIST")) {
    auto backends = ParseBackendList(s.String("HAPROXY_BACKEND_LIST"), c.backend_server_port);
    if (!backends) return backends.error();
    c.backends = std::move(*backends);
  } else if (!c.backend_name.empty()) {
    c.backends.push_back({c.backend_name, c.backend_base_name, c.backend_server_port});
  }

  c.aws = ReadAwsEnvironment(env);
  c.aws.default_region = s.String("AWS_DEFAULT_REGION");
  if (const auto attempts = EnvOr(env, "AWS_MAX_ATTEMPTS"); !attempts.empty()) {
    int n = 0;
    const auto [ptr, ec] = std::from_chars(attempts.data(), attempts.data() + attempts.size(), n);
    if (ec != std::errc() || ptr != attempts.data() + attempts.size() || n < 1 || n > 20) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "invalid configuration: AWS_MAX_ATTEMPTS=\"{}\" (from the environment): "
                       "expected an integer from 1 to 20",
                       attempts);
    }
    c.aws.max_attempts = n;
  }
  return c;
}

std::optional<BackendConfig> Config::FallbackBackend() const {
  if (fallback_backend_name.empty()) return std::nullopt;
  return BackendConfig{fallback_backend_name, fallback_backend_base_name, backend_server_port};
}

namespace {
Error Missing(std::string_view what) {
  return MakeError(ErrorCode::kInvalidArgument, "invalid configuration: {}", what);
}
}  // namespace

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
      break;
    case ServerMode::kFile:
      if (c.server_file_path.empty()) {
        return Missing("SERVER_FILE_PATH is not set: SERVER_MODE=file needs a targets file");
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
  for (const auto& backend : c.backends) {
    if (backend.base_name.empty()) {
      return Missing(fmt::format(
          "HAPROXY_BACKEND_BASE_NAME is not set: backend {} needs the server-template base name",
          backend.name));
    }
  }
  if (c.az_limiter) {
    if (c.fallback_backend_name.empty() || c.fallback_backend_base_name.empty()) {
      return Missing(
          "AZ_LIMITER=true needs HAPROXY_FALLBACK_BACKEND_NAME and "
          "HAPROXY_FALLBACK_BACKEND_BASE_NAME");
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
