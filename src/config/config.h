// hsdo's configuration: every variable of the seed README with the seed's default, plus
// hsdo's own. Loaded and validated in one place (config.cc) from conf/env.yaml and the
// environment (which wins); the rest of the code receives these plain structs and never
// reads the environment itself.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace hsdo {

enum class ServerMode { kNone, kAws, kConsul, kFile };
enum class StoreKind { kDynamoDb, kSqlite, kEtcd };
enum class LogFormat { kText, kJson };

// One HAProxy backend an agent manages: its slots are servers <base_name>1..<base_name>N.
struct BackendConfig {
  std::string name;
  std::string base_name;
  std::uint16_t port = 80;  // used when a target has no port of its own
  bool operator==(const BackendConfig&) const = default;
};

struct ConsulConfig {
  std::string api_url;                     // CONSUL_API_URL
  std::vector<std::string> service_names;  // CONSUL_SERVICE_NAME
  std::string token;                       // CONSUL_HTTP_TOKEN, sent as X-Consul-Token
  std::string token_file;                  // CONSUL_HTTP_TOKEN_FILE, read at each request
  std::string ca_cert;                     // CONSUL_CACERT
  std::string client_cert;                 // CONSUL_CLIENT_CERT
  std::string client_key;                  // CONSUL_CLIENT_KEY
  std::string datacenter;                  // CONSUL_DATACENTER
  std::string tag;                         // CONSUL_SERVICE_TAG
  std::string az_meta_key;                 // CONSUL_AZ_META_KEY (node or service meta)
  bool passing_only = true;                // CONSUL_PASSING_ONLY
};

// etcd v3 (STORE=etcd), reached through its JSON gateway; names in etcdctl's spirit.
struct EtcdConfig {
  std::vector<std::string> endpoints;  // ETCD_ENDPOINTS: http(s)://host:port, comma-separated
  std::string prefix;                  // ETCD_PREFIX (default /hsdo/<DYNAMODB_TABLE_NAME|default>)
  std::string username;                // ETCD_USERNAME
  std::string password;                // ETCD_PASSWORD (never logged)
  std::string password_file;           // ETCD_PASSWORD_FILE, read at each authentication
  std::string ca_cert;                 // ETCD_CACERT
  std::string cert;                    // ETCD_CERT
  std::string key;                     // ETCD_KEY
  // ETCD_COMPACTION_INTERVAL: how often the leader compacts etcd's history (0: never).
  std::chrono::milliseconds compaction_interval{300'000};
};

// AWS settings as the AWS SDKs read them (environment only, except the seed's
// AWS_DEFAULT_REGION which may also be in the config file). Secrets live here only in memory
// and are never logged.
struct AwsConfig {
  std::string access_key_id;            // AWS_ACCESS_KEY_ID
  std::string secret_access_key;        // AWS_SECRET_ACCESS_KEY
  std::string session_token;            // AWS_SESSION_TOKEN
  std::string profile;                  // AWS_PROFILE (empty: "default")
  std::string shared_credentials_file;  // AWS_SHARED_CREDENTIALS_FILE (empty: ~/.aws/credentials)
  std::string config_file;              // AWS_CONFIG_FILE (empty: ~/.aws/config)
  std::string home;                     // HOME
  std::string web_identity_token_file;  // AWS_WEB_IDENTITY_TOKEN_FILE
  std::string role_arn;                 // AWS_ROLE_ARN
  std::string role_session_name;        // AWS_ROLE_SESSION_NAME
  std::string container_credentials_relative_uri;  // AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
  std::string container_credentials_full_uri;      // AWS_CONTAINER_CREDENTIALS_FULL_URI
  std::string container_authorization_token;       // AWS_CONTAINER_AUTHORIZATION_TOKEN
  std::string container_authorization_token_file;  // AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE
  bool ec2_metadata_disabled = false;              // AWS_EC2_METADATA_DISABLED
  std::string ec2_metadata_service_endpoint;       // AWS_EC2_METADATA_SERVICE_ENDPOINT
  std::string region;                              // AWS_REGION
  std::string default_region;                      // AWS_DEFAULT_REGION (seed variable)
  std::string endpoint_url;                        // AWS_ENDPOINT_URL
  std::string endpoint_url_dynamodb;               // AWS_ENDPOINT_URL_DYNAMODB
  std::string endpoint_url_auto_scaling;           // AWS_ENDPOINT_URL_AUTO_SCALING
  std::string endpoint_url_ec2;                    // AWS_ENDPOINT_URL_EC2
  std::string endpoint_url_sts;                    // AWS_ENDPOINT_URL_STS
  int max_attempts = 3;                            // AWS_MAX_ATTEMPTS (standard retry mode default)
  std::string ca_bundle;  // AWS_CA_BUNDLE (empty: the profile's, else the system's)
  // Not a setting: how long one attempt of a request may take. An agent's is shorter
  // (MakeAgentStore): it must get back to HAProxy.
  std::chrono::milliseconds request_timeout{10'000};
};

struct Config {
  // Server (orchestrator) only.
  ServerMode server_mode = ServerMode::kNone;  // SERVER_MODE: aws | consul | file
  std::vector<std::string> server_asg_names;   // SERVER_ASG_NAMES
  std::string server_file_path;                // SERVER_FILE_PATH
  int min_weight = 1;                          // HAPROXY_BACKEND_SERVER_MIN_WEIGHT
  int max_weight = 10;                         // HAPROXY_BACKEND_SERVER_MAX_WEIGHT
  int increase_weight = 1;                     // HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT
  std::chrono::milliseconds increase_weight_interval{30'000};  // ..._INCREASE_WEIGHT_INTERVAL
  ConsulConfig consul;
  // Mass-removal guard: a plan freeing more than this fraction of the enabled slots in one
  // step waits until the source has answered the same way for mass_removal_delay.
  double max_removed_fraction = 0.5;                     // MAX_REMOVED_FRACTION (1 = off)
  std::chrono::milliseconds mass_removal_delay{60'000};  // MASS_REMOVAL_DELAY (seconds)
  bool replacements_by_checks = true;              // REPLACEMENTS_PROVEN_BY_CHECKS (RemovalGuard)
  std::chrono::milliseconds leader_lease{10'000};  // LEADER_LEASE_SECONDS
  std::chrono::milliseconds node_record_expiry{86'400'000};  // NODE_RECORD_EXPIRY (seconds)
  std::chrono::milliseconds drain_timeout{0};  // HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT (s)

  // Client (agent) only.
  std::vector<std::string> client_asg_names;                        // CLIENT_ASG_NAMES
  std::string haproxy_socket_path = "/var/run/haproxy/admin.sock";  // HAPROXY_SOCKET_PATH
  std::string backend_name;                                         // HAPROXY_BACKEND_NAME
  std::string backend_base_name;                                    // HAPROXY_BACKEND_BASE_NAME
  std::uint16_t backend_server_port = 80;                           // HAPROXY_BACKEND_SERVER_PORT
  bool backend_server_port_given = false;  // HAPROXY_BACKEND_SERVER_PORT set, not its default
  std::string fallback_backend_name;       // HAPROXY_FALLBACK_BACKEND_NAME
  std::string fallback_backend_base_name;  // HAPROXY_FALLBACK_BACKEND_BASE_NAME
  std::uint16_t fallback_backend_server_port =
      0;                                         // HAPROXY_FALLBACK_BACKEND_SERVER_PORT (0: unset)
  bool az_limiter = false;                       // AZ_LIMITER
  bool all_servers_in_fallback_backend = false;  // ALL_SERVERS_IN_FALLBACK_BACKEND
  // The primary backends: HAPROXY_BACKEND_LIST when set, else the single seed backend
  // (HAPROXY_BACKEND_NAME / _BASE_NAME / _SERVER_PORT) when its name is set.
  std::vector<BackendConfig> backends;
  // A full `show servers state` at least this often, even when nothing seems to have changed.
  std::chrono::milliseconds haproxy_full_sync_interval{10'000};  // HAPROXY_FULL_SYNC_INTERVAL
  std::string node_name;         // HSDO_NODE_NAME (empty: the host name)
  bool admission_gating = true;  // HAPROXY_ADMISSION_GATING

  // Both.
  std::chrono::milliseconds interval{1000};  // INTERVAL (seconds, may be fractional)
  int list_size = 10;                        // HAPROXY_BACKEND_SERVERS_LIST_SIZE
  bool debug = false;                        // DEBUG
  std::string dynamodb_table_name;           // DYNAMODB_TABLE_NAME
  std::uint16_t exporter_port = 6789;        // EXPORTER_PORT
  std::string exporter_address = "0.0.0.0";  // EXPORTER_ADDRESS (the seed listened on all)
  StoreKind store = StoreKind::kSqlite;      // STORE (default: dynamodb iff a table is named)
  std::string sqlite_path = "/var/lib/hsdo/hsdo.db";  // SQLITE_PATH
  EtcdConfig etcd;
  LogFormat log_format = LogFormat::kText;  // LOG_FORMAT: text | json
  AwsConfig aws;

  // The fallback backend used by the AZ limiter, when configured. Its port (for targets whose
  // source gives none): HAPROXY_FALLBACK_BACKEND_SERVER_PORT when set, else the primary
  // backends' when they all have the same, else HAPROXY_BACKEND_SERVER_PORT (with a warning).
  std::optional<BackendConfig> FallbackBackend() const;
};

using Environment = std::map<std::string, std::string>;

// Which role reads a setting (the process's own role, for LoadConfig).
enum class SettingRole { kServer, kClient, kBoth };

// A snapshot of the process environment (the one place that reads it).
Environment ReadProcessEnvironment();

// Loads `path` (a YAML map of VARIABLE: value; a missing file is fine when
// `path_must_exist` is false), applies `env` over it, and validates every value. The error
// names the variable, the value (unless secret) and what was expected, on one line.
// Non-fatal findings (unknown variables in the file) go to `warnings`, or to the log when it
// is null. The variables, their aliases, defaults and checks are one table (settings.cc).
// `running_as` (kServer, kClient): a process of that role only warns of an invalid value of a
// setting that only the other role reads, and keeps its default (one env.yaml is shared by
// the fleet, and an agent that stopped on an orchestrator's setting, refused since an upgrade,
// stopped managing its HAProxy). Without it (`hsdo config`, the commands) every value counts.
Result<Config> LoadConfig(const std::string& path, bool path_must_exist, const Environment& env,
                          std::vector<std::string>* warnings = nullptr,
                          SettingRole running_as = SettingRole::kBoth);

// Which config file to read: --config FILE, else $HSDO_CONFIG, else ./conf/env.yaml, else
// /etc/hsdo/env.yaml. A file named by the flag or HSDO_CONFIG must exist; the two defaults
// are tried in order, and neither existing is fine (path empty).
struct ConfigLocation {
  std::string path;  // empty: no file, the environment and defaults only
  bool must_exist = false;
  std::string how;  // "--config", "HSDO_CONFIG", "default", for the first log line
};
ConfigLocation LocateConfigFile(const std::string& flag_path, const Environment& env,
                                const std::function<bool(const std::string&)>& exists);

// One entry of the settings table, for --help, `hsdo config` and tests.
struct SettingInfo {
  std::string_view name;
  std::vector<std::string_view> aliases;  // other accepted spellings (the Python HSDO's)
  std::string_view default_text;          // as conf/env.yaml writes it; empty: unset
  std::string_view doc;
  SettingRole role = SettingRole::kBoth;
  bool secret = false;            // never printed or logged
  bool environment_only = false;  // AWS SDK variables: not read from the config file
};
std::vector<SettingInfo> DescribeSettings();

// The variable list of --help, generated from the table.
std::string SettingsHelp();

// The effective value of every setting as NAME, text (secrets masked), in table order.
std::vector<std::pair<std::string, std::string>> EffectiveSettings(const Config& config);

// Checks what a role needs beyond valid values (SERVER_MODE set, a backend named, ...).
Result<void> ValidateForServer(const Config& config);
// The leader lease the orchestrator uses: LEADER_LEASE_SECONDS, raised to 3 x INTERVAL when
// shorter, since the leader renews its lease from its cycle (a lease of one or two cycles
// would pass to a standby whenever a cycle runs late).
std::chrono::milliseconds EffectiveLeaderLease(const Config& config);
Result<void> ValidateForClient(const Config& config);
// What the store needs (a table name for DynamoDB, a path for SQLite).
Result<void> ValidateForStore(const Config& config);

std::string_view ToString(ServerMode mode);
std::string_view ToString(StoreKind kind);
// Where the configured store is, for logs: the SQLite path, the DynamoDB table, or the etcd
// endpoints and prefix.
std::string StoreLocation(const Config& config);
std::string_view ToString(LogFormat format);

}  // namespace hsdo
