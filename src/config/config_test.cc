#include "config/config.h"

#include <sys/stat.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include "common/testing/log_capture.h"
#include "common/testing/temp_dir.h"

namespace hsdo {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

class ConfigTest : public ::testing::Test {
 protected:
  void WriteFile(const std::string& text) { std::ofstream(path_) << text; }

  Result<Config> Load(const Environment& env = {}) { return LoadConfig(path_, false, env); }

  testing::TempDir dir_;
  std::string path_ = dir_.File("env.yaml");
};

TEST_F(ConfigTest, SeedDefaultsWhenNothingIsSet) {
  auto config = Load();
  ASSERT_TRUE(config.ok()) << config.error().message;
  const Config& c = *config;
  EXPECT_TRUE(c.server_asg_names.empty());
  EXPECT_TRUE(c.consul.api_url.empty());
  EXPECT_TRUE(c.consul.service_names.empty());
  EXPECT_EQ(c.min_weight, 1);
  EXPECT_EQ(c.max_weight, 10);
  EXPECT_EQ(c.increase_weight, 1);
  EXPECT_EQ(c.increase_weight_interval, 30s);
  EXPECT_EQ(c.server_mode, ServerMode::kNone);
  EXPECT_TRUE(c.client_asg_names.empty());
  EXPECT_EQ(c.haproxy_socket_path, "/var/run/haproxy/admin.sock");
  EXPECT_TRUE(c.backend_name.empty());
  EXPECT_TRUE(c.backend_base_name.empty());
  EXPECT_TRUE(c.fallback_backend_name.empty());
  EXPECT_TRUE(c.fallback_backend_base_name.empty());
  EXPECT_EQ(c.backend_server_port, 80);
  EXPECT_FALSE(c.az_limiter);
  EXPECT_FALSE(c.all_servers_in_fallback_backend);
  EXPECT_EQ(c.interval, 1s);
  EXPECT_EQ(c.list_size, 10);
  EXPECT_FALSE(c.debug);
  EXPECT_TRUE(c.dynamodb_table_name.empty());
  EXPECT_TRUE(c.aws.default_region.empty());
  EXPECT_EQ(c.exporter_port, 6789);
  // hsdo's own.
  EXPECT_EQ(c.exporter_address, "0.0.0.0");
  EXPECT_EQ(c.store, StoreKind::kSqlite);
  EXPECT_EQ(c.sqlite_path, "/var/lib/hsdo/hsdo.db");
  EXPECT_TRUE(c.backends.empty());
  EXPECT_FALSE(c.FallbackBackend().has_value());
  EXPECT_EQ(c.max_removed_fraction, 0.5);
  EXPECT_EQ(c.mass_removal_delay, 60s);
  EXPECT_EQ(c.leader_lease, 10s);
  EXPECT_EQ(c.drain_timeout, 0s);
  EXPECT_EQ(c.haproxy_full_sync_interval, 10s);
  EXPECT_TRUE(c.node_name.empty());
  EXPECT_TRUE(c.admission_gating);
  EXPECT_EQ(c.log_format, LogFormat::kText);
  EXPECT_TRUE(c.etcd.endpoints.empty());
  EXPECT_EQ(c.etcd.prefix, "/hsdo/default");
}

TEST_F(ConfigTest, EtcdSettings) {
  auto config = Load({{"STORE", "etcd"},
                      {"ETCD_ENDPOINTS", "http://127.0.0.1:2379/, http://127.0.0.2:2379"},
                      {"DYNAMODB_TABLE_NAME", "fleet"}});
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->store, StoreKind::kEtcd);
  EXPECT_EQ(config->etcd.endpoints,
            (std::vector<std::string>{"http://127.0.0.1:2379", "http://127.0.0.2:2379"}));
  EXPECT_EQ(config->etcd.prefix, "/hsdo/fleet");
  EXPECT_TRUE(ValidateForStore(*config).ok());
  auto no_endpoint = Load({{"STORE", "etcd"}});
  ASSERT_TRUE(no_endpoint.ok());
  EXPECT_FALSE(ValidateForStore(*no_endpoint).ok());
}

// Review (secrets that rotate): ETCD_PASSWORD_FILE, read at each authentication, is checked at
// start by every role that uses the etcd store.
TEST_F(ConfigTest, EtcdPasswordFileIsCheckedAtStart) {
  const std::string file = (std::filesystem::path(path_).parent_path() / "password").string();
  std::ofstream(file) << "s3cret\n";
  const std::map<std::string, std::string> base{
      {"STORE", "etcd"}, {"ETCD_ENDPOINTS", "http://127.0.0.1:2379"}, {"ETCD_USERNAME", "root"}};
  const auto with = [&](std::map<std::string, std::string> extra) {
    extra.insert(base.begin(), base.end());
    return Load(extra);
  };
  auto config = with({{"ETCD_PASSWORD_FILE", file}});
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->etcd.password_file, file);
  EXPECT_TRUE(ValidateForStore(*config).ok());
  // Both: the variable, and a warning; a file not written yet is no error at start.
  std::map<std::string, std::string> both_env{{"ETCD_PASSWORD_FILE", file}, {"ETCD_PASSWORD", "x"}};
  both_env.insert(base.begin(), base.end());
  std::vector<std::string> warnings;
  auto both = LoadConfig(path_, false, both_env, &warnings);
  ASSERT_TRUE(both.ok());
  EXPECT_EQ(both->etcd.password, "x");
  EXPECT_TRUE(both->etcd.password_file.empty());
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("ETCD_PASSWORD and ETCD_PASSWORD_FILE are both set: ETCD_PASSWORD "
                             "is used, and the file is not read"),
            std::string::npos)
      << warnings[0];
  auto missing = with({{"ETCD_PASSWORD_FILE", file + ".missing"}});
  ASSERT_TRUE(missing.ok());
  EXPECT_TRUE(ValidateForStore(*missing).ok());
  std::ofstream(file + ".two-lines") << "s3cret\nx\n";
  const struct {
    std::map<std::string, std::string> extra;
    std::string expected;
  } cases[] = {
      {{{"ETCD_PASSWORD_FILE", file}, {"ETCD_USERNAME", ""}},
       "ETCD_PASSWORD_FILE is set without ETCD_USERNAME"},
      {{{"ETCD_PASSWORD_FILE", file + ".two-lines"}},
       "ETCD_PASSWORD_FILE=\"" + file + ".two-lines\": holds a control character"},
  };
  for (const auto& c : cases) {
    auto loaded = with(c.extra);
    ASSERT_TRUE(loaded.ok()) << loaded.error().message;
    auto invalid = ValidateForStore(*loaded);
    ASSERT_FALSE(invalid.ok()) << c.expected;
    EXPECT_NE(invalid.error().message.find(c.expected), std::string::npos)
        << invalid.error().message;
  }
  // Another store does not read it.
  auto sqlite = Load({{"STORE", "sqlite"}, {"ETCD_PASSWORD_FILE", file + ".missing"}});
  ASSERT_TRUE(sqlite.ok());
  EXPECT_TRUE(ValidateForStore(*sqlite).ok());
}

TEST_F(ConfigTest, ReadsEveryVariableFromTheFile) {
  WriteFile(R"(
SERVER_ASG_NAMES: asg-a, asg-b
CONSUL_API_URL: http://127.0.0.1:8500/
CONSUL_SERVICE_NAME: [web, api]
HAPROXY_BACKEND_SERVER_MIN_WEIGHT: 2
HAPROXY_BACKEND_SERVER_MAX_WEIGHT: 20
HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT: 3
HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT_INTERVAL: 0.5
SERVER_MODE: consul
CLIENT_ASG_NAMES: asg-a
HAPROXY_SOCKET_PATH: /tmp/admin.sock
HAPROXY_BACKEND_NAME: http-back
HAPROXY_BACKEND_BASE_NAME: mywebapp
HAPROXY_FALLBACK_BACKEND_NAME: http-fallback
HAPROXY_FALLBACK_BACKEND_BASE_NAME: fb
HAPROXY_BACKEND_SERVER_PORT: 8080
AZ_LIMITER: TRUE
ALL_SERVERS_IN_FALLBACK_BACKEND: True
INTERVAL: 2.5
HAPROXY_BACKEND_SERVERS_LIST_SIZE: 50
DEBUG: true
DYNAMODB_TABLE_NAME: my-table
AWS_DEFAULT_REGION: eu-west-1
EXPORTER_PORT: 9100
SQLITE_PATH: /tmp/x.db
CONSUL_HTTP_TOKEN: secret
CONSUL_DATACENTER: dc2
CONSUL_SERVICE_TAG: blue
CONSUL_AZ_META_KEY: az
)");
  auto config = Load();
  ASSERT_TRUE(config.ok()) << config.error().message;
  const Config& c = *config;
  EXPECT_EQ(c.server_asg_names, (std::vector<std::string>{"asg-a", "asg-b"}));
  EXPECT_EQ(c.consul.api_url, "http://127.0.0.1:8500");
  EXPECT_EQ(c.consul.service_names, (std::vector<std::string>{"web", "api"}));
  EXPECT_EQ(c.min_weight, 2);
  EXPECT_EQ(c.max_weight, 20);
  EXPECT_EQ(c.increase_weight, 3);
  EXPECT_EQ(c.increase_weight_interval, 500ms);
  EXPECT_EQ(c.server_mode, ServerMode::kConsul);
  EXPECT_EQ(c.client_asg_names, (std::vector<std::string>{"asg-a"}));
  EXPECT_EQ(c.haproxy_socket_path, "/tmp/admin.sock");
  EXPECT_EQ(c.backends, (std::vector<BackendConfig>{{"http-back", "mywebapp", 8080}}));
  EXPECT_EQ(c.FallbackBackend(), (BackendConfig{"http-fallback", "fb", 8080}));
  EXPECT_TRUE(c.az_limiter);
  EXPECT_TRUE(c.all_servers_in_fallback_backend);
  EXPECT_EQ(c.interval, 2500ms);
  EXPECT_EQ(c.list_size, 50);
  EXPECT_TRUE(c.debug);
  EXPECT_EQ(c.dynamodb_table_name, "my-table");
  EXPECT_EQ(c.store, StoreKind::kDynamoDb);  // a table is named
  EXPECT_EQ(c.aws.default_region, "eu-west-1");
  EXPECT_EQ(c.exporter_port, 9100);
  EXPECT_EQ(c.sqlite_path, "/tmp/x.db");
  EXPECT_EQ(c.consul.token, "secret");
  EXPECT_EQ(c.consul.datacenter, "dc2");
  EXPECT_EQ(c.consul.tag, "blue");
  EXPECT_EQ(c.consul.az_meta_key, "az");
}

TEST_F(ConfigTest, EnvironmentOverridesTheFile) {
  WriteFile("INTERVAL: 5\nHAPROXY_BACKEND_NAME: from-file\nHAPROXY_BACKEND_BASE_NAME: srv\n");
  auto config = Load({{"INTERVAL", "3"}, {"HAPROXY_BACKEND_NAME", "from-env"}});
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->interval, 3s);
  EXPECT_EQ(config->backends, (std::vector<BackendConfig>{{"from-env", "srv", 80}}));
}

TEST_F(ConfigTest, EmptyOrBlankValueMeansUnset) {
  auto config = Load({{"INTERVAL", " "}, {"SERVER_MODE", ""}});
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->interval, 1s);
  EXPECT_EQ(config->server_mode, ServerMode::kNone);
}

TEST_F(ConfigTest, StoreChoice) {
  EXPECT_EQ(Load({{"DYNAMODB_TABLE_NAME", "tbl"}})->store, StoreKind::kDynamoDb);
  EXPECT_EQ(Load({{"DYNAMODB_TABLE_NAME", "tbl"}, {"STORE", "SQLite"}})->store, StoreKind::kSqlite);
  EXPECT_EQ(Load({{"STORE", "dynamodb"}})->store, StoreKind::kDynamoDb);
  EXPECT_FALSE(ValidateForStore(*Load({{"STORE", "dynamodb"}})).ok());
}

// ETCD_ENDPOINTS without STORE runs on SQLite, or on DynamoDB when a table is named (for the etcd
// prefix): not etcd. It is said, not refused: a DynamoDB fleet with a stray ETCD_ENDPOINTS
// works, and its agents must not stop at an upgrade.
TEST_F(ConfigTest, EtcdEndpointsWithoutStoreIsSaid) {
  for (const Environment& env :
       {Environment{{"ETCD_ENDPOINTS", "http://127.0.0.1:2379"}},
        Environment{{"ETCD_ENDPOINTS", "http://127.0.0.1:2379"}, {"DYNAMODB_TABLE_NAME", "tbl"}}}) {
    std::vector<std::string> warnings;
    auto config = LoadConfig(path_, false, env, &warnings);
    ASSERT_TRUE(config.ok()) << config.error().message;
    EXPECT_NE(config->store, StoreKind::kEtcd);
    ASSERT_EQ(warnings.size(), 1u);
    EXPECT_NE(warnings[0].find("set STORE=etcd"), std::string::npos) << warnings[0];
  }
  std::vector<std::string> none;
  EXPECT_EQ(LoadConfig(path_, false,
                       {{"ETCD_ENDPOINTS", "http://127.0.0.1:2379"}, {"STORE", "sqlite"}}, &none)
                ->store,
            StoreKind::kSqlite);
  EXPECT_EQ(LoadConfig(path_, false, {{"ETCD_ENDPOINTS", " "}}, &none)->store,
            StoreKind::kSqlite);  // blank: unset
  EXPECT_TRUE(none.empty());
}

TEST_F(ConfigTest, ServerModeFileAndBackendList) {
  auto config = Load({{"SERVER_MODE", "file"},
                      {"SERVER_FILE_PATH", "/etc/targets.yaml"},
                      {"HAPROXY_BACKEND_LIST", "be1:srv:8080, be2:web"},
                      {"HAPROXY_BACKEND_SERVER_PORT", "81"}});
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->server_mode, ServerMode::kFile);
  EXPECT_EQ(config->server_file_path, "/etc/targets.yaml");
  EXPECT_EQ(config->backends,
            (std::vector<BackendConfig>{{"be1", "srv", 8080}, {"be2", "web", 81}}));
}

TEST_F(ConfigTest, BackendListAsYamlMaps) {
  WriteFile(R"(
HAPROXY_BACKEND_LIST:
  - {name: be1, base_name: a, port: 9001}
  - {name: be2, base_name: b}
)");
  auto config = Load();
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->backends, (std::vector<BackendConfig>{{"be1", "a", 9001}, {"be2", "b", 80}}));
}

// Found in review: with HAPROXY_BACKEND_LIST=app:srv:8080 and no HAPROXY_BACKEND_SERVER_PORT,
// every fallback server was set to port 80, and every request that failed over failed.
TEST_F(ConfigTest, TheFallbackBackendTakesThePrimaryBackendsPort) {
  const Environment fallback{{"HAPROXY_FALLBACK_BACKEND_NAME", "remote"},
                             {"HAPROXY_FALLBACK_BACKEND_BASE_NAME", "r"}};
  auto with = [&](Environment more) {
    more.insert(fallback.begin(), fallback.end());
    return Load(more)->FallbackBackend();
  };
  EXPECT_EQ(with({{"HAPROXY_BACKEND_LIST", "app:srv:8080"}}), (BackendConfig{"remote", "r", 8080}));
  EXPECT_EQ(with({{"HAPROXY_BACKEND_LIST", "app:srv:8080,api:a:8080"}}),
            (BackendConfig{"remote", "r", 8080}));
  EXPECT_EQ(with({{"HAPROXY_BACKEND_NAME", "app"},
                  {"HAPROXY_BACKEND_BASE_NAME", "srv"},
                  {"HAPROXY_BACKEND_SERVER_PORT", "8081"}}),
            (BackendConfig{"remote", "r", 8081}));
  // Primaries on different ports: the fallback cannot follow both; HAPROXY_BACKEND_SERVER_PORT.
  EXPECT_EQ(with({{"HAPROXY_BACKEND_LIST", "app:srv:8080,api:a:9090"},
                  {"HAPROXY_BACKEND_SERVER_PORT", "8082"}}),
            (BackendConfig{"remote", "r", 8082}));
}

// Found in review: a backend of another port added to HAPROXY_BACKEND_LIST silently moved every
// fallback server from the primaries' port to 80 (HAPROXY_BACKEND_SERVER_PORT's default). The
// fallback's port has a variable of its own now (setting HAPROXY_BACKEND_SERVER_PORT would
// also move the listed backends that give no port), and until it is set, with AZ_LIMITER, the
// port taken is said. Not refused: such a deployment may work, and must not stop at an upgrade.
TEST_F(ConfigTest, PrimariesOfDifferentPortsSayWhichPortTheFallbackTakes) {
  Environment env{{"AZ_LIMITER", "true"},
                  {"CLIENT_ASG_NAMES", "asg-a"},
                  {"HAPROXY_FALLBACK_BACKEND_NAME", "remote"},
                  {"HAPROXY_FALLBACK_BACKEND_BASE_NAME", "r"},
                  {"HAPROXY_BACKEND_LIST", "app:srv:8080,api:a:9090"}};
  auto load = [&](std::vector<std::string>& warnings) {
    return LoadConfig(path_, false, env, &warnings);
  };
  std::vector<std::string> warnings;
  auto config = load(warnings);
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_TRUE(ValidateForClient(*config).ok());
  EXPECT_EQ(config->FallbackBackend(), (BackendConfig{"remote", "r", 80}));
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("app 8080, api 9090"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("HAPROXY_BACKEND_SERVER_PORT=80 (its default): set "
                             "HAPROXY_FALLBACK_BACKEND_SERVER_PORT"),
            std::string::npos)
      << warnings[0];

  env["HAPROXY_FALLBACK_BACKEND_SERVER_PORT"] = "8443";
  warnings.clear();
  config = load(warnings);
  EXPECT_TRUE(warnings.empty());
  EXPECT_EQ(config->FallbackBackend(), (BackendConfig{"remote", "r", 8443}));
  EXPECT_EQ(config->backends.front().port, 8080);    // the listed backends stay where they were
  const auto settings = EffectiveSettings(*config);  // `hsdo config`
  EXPECT_EQ(std::count(settings.begin(), settings.end(),
                       std::pair<std::string, std::string>{"HAPROXY_FALLBACK_BACKEND_SERVER_PORT",
                                                           "8443"}),
            1);
  env.erase("HAPROXY_FALLBACK_BACKEND_SERVER_PORT");

  env["HAPROXY_BACKEND_LIST"] = "app:srv:8080,api:a:8080";  // agreeing: the fallback follows
  warnings.clear();
  EXPECT_EQ(load(warnings)->FallbackBackend(), (BackendConfig{"remote", "r", 8080}));
  EXPECT_TRUE(warnings.empty());
  env["AZ_LIMITER"] = "false";  // no AZ limiter: no fallback in use, nothing to say of its port
  env["HAPROXY_BACKEND_LIST"] = "app:srv:8080,api:a:9090";
  warnings.clear();
  EXPECT_TRUE(load(warnings).ok());
  ASSERT_EQ(warnings.size(), 1u);  // only that its settings have no effect
  EXPECT_NE(warnings[0].find("but AZ_LIMITER is false"), std::string::npos) << warnings[0];
}

// Found in review: a misspelled key ({baseName: web, server_port: 8080}) was ignored, and every
// server went to HAPROXY_BACKEND_SERVER_PORT (80) without a word. It is an error naming the key.
TEST_F(ConfigTest, AnUnknownKeyInTheYamlBackendListIsAnError) {
  WriteFile(R"(
HAPROXY_BACKEND_LIST:
  web: {baseName: web, server_port: 8080}
)");
  auto config = Load();
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(config.error().message.find("server_port"), std::string::npos)
      << config.error().message;
  EXPECT_NE(config.error().message.find("HAPROXY_BACKEND_LIST (line 3)"), std::string::npos)
      << config.error().message;
  WriteFile(R"(
HAPROXY_BACKEND_LIST:
  - {name: be1, base_name: a, ports: 9001}
)");
  EXPECT_FALSE(Load().ok());
  // Either spelling, in either form.
  WriteFile(R"(
HAPROXY_BACKEND_LIST:
  - {name: be1, baseName: a, serverPort: 9001}
)");
  auto either = Load();
  ASSERT_TRUE(either.ok()) << either.error().message;
  EXPECT_EQ(either->backends, (std::vector<BackendConfig>{{"be1", "a", 9001}}));
}

// Found in review: a backend's port (or base name) given as a list, or left empty, was read as
// none, so every server of that backend got HAPROXY_BACKEND_SERVER_PORT (80); both spellings at
// once silently took one.
TEST_F(ConfigTest, ABackendListPortThatIsNoSingleValueIsAnError) {
  for (const char* text : {"HAPROXY_BACKEND_LIST:\n  web: {baseName: web, serverPort: [8080]}\n",
                           "HAPROXY_BACKEND_LIST:\n  web: {baseName: web, serverPort: }\n",
                           "HAPROXY_BACKEND_LIST:\n  - {name: web, base_name: {a: b}, port: 1}\n",
                           "HAPROXY_BACKEND_LIST:\n  web: {baseName: web, serverPort: 8080, port: "
                           "9090}\n"}) {
    SCOPED_TRACE(text);
    WriteFile(text);
    auto config = Load();
    ASSERT_FALSE(config.ok());
    EXPECT_EQ(config.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(config.error().message.find("backend 'web'"), std::string::npos)
        << config.error().message;
  }
  WriteFile("");
  auto from_env =
      Load({{"HAPROXY_BACKEND_LIST", R"({"web": {"baseName": "web", "serverPort": ["8080"]}})"}});
  ASSERT_FALSE(from_env.ok());
  EXPECT_NE(from_env.error().message.find("serverPort must be a single value"), std::string::npos)
      << from_env.error().message;
}

// Found in review: a list setting written as a list in the environment was one name, brackets
// and quotes included: CLIENT_ASG_NAMES='["asg-a"]' matched no target, and every request went
// to the fallback backend. It reads as the file's list does.
TEST_F(ConfigTest, AListSettingGivenAsAYamlListInTheEnvironmentIsThatList) {
  auto config = Load({{"CLIENT_ASG_NAMES", R"(["asg-a", "asg-b"])"},
                      {"SERVER_ASG_NAMES", "[a]"},
                      {"CONSUL_SERVICE_NAME", "web,api"}});
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->client_asg_names, (std::vector<std::string>{"asg-a", "asg-b"}));
  EXPECT_EQ(config->server_asg_names, std::vector<std::string>{"a"});
  EXPECT_EQ(config->consul.service_names, (std::vector<std::string>{"web", "api"}));
  // Only list settings: a secret may start with a bracket.
  auto secret = Load({{"CONSUL_HTTP_TOKEN", "[abc]"}});
  ASSERT_TRUE(secret.ok()) << secret.error().message;
  EXPECT_EQ(secret->consul.token, "[abc]");
}

// Found in review: durations printed with {:g} (`hsdo config`) read back as another value.
TEST_F(ConfigTest, ADurationPrintsAsTheValueItReadsBackAs) {
  auto config = Load({{"MASS_REMOVAL_DELAY", "1234567"}, {"INTERVAL", "0.25"}});
  ASSERT_TRUE(config.ok()) << config.error().message;
  std::map<std::string, std::string> shown;
  for (const auto& [name, value] : EffectiveSettings(*config)) shown[name] = value;
  EXPECT_EQ(shown["MASS_REMOVAL_DELAY"], "1234567");
  EXPECT_EQ(shown["INTERVAL"], "0.25");
}

// Review of adeea63: `hsdo config` printed a secret put where its file's path belongs.
TEST_F(ConfigTest, ASecretsFileValueThatMayBeTheSecretItselfIsNotPrinted) {
  const std::string dir = std::filesystem::path(path_).parent_path().string();
  auto config = Load({{"CONSUL_HTTP_TOKEN_FILE", "kq3/Zx9+Secret/Pw=="},
                      {"ETCD_PASSWORD_FILE", dir + "/not-rendered-yet"}});
  ASSERT_TRUE(config.ok()) << config.error().message;
  std::map<std::string, std::string> shown;
  for (const auto& [name, value] : EffectiveSettings(*config)) shown[name] = value;
  EXPECT_EQ(shown["CONSUL_HTTP_TOKEN_FILE"],
            "<hidden: no such file or directory, and it may be the secret itself>");
  EXPECT_EQ(shown["ETCD_PASSWORD_FILE"], dir + "/not-rendered-yet");
}

struct InvalidCase {
  std::string variable;
  std::string value;
  std::string expected;  // a fragment of the error
};

class InvalidValueTest : public ConfigTest, public ::testing::WithParamInterface<InvalidCase> {};

TEST_P(InvalidValueTest, NamesTheVariableTheValueAndWhatWasExpected) {
  const auto& param = GetParam();
  auto config = Load({{param.variable, param.value}});
  ASSERT_FALSE(config.ok()) << param.variable << "=" << param.value;
  EXPECT_EQ(config.error().code, ErrorCode::kInvalidArgument);
  const auto& message = config.error().message;
  EXPECT_NE(message.find(param.variable), std::string::npos) << message;
  EXPECT_NE(message.find(param.value), std::string::npos) << message;
  EXPECT_NE(message.find(param.expected), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << "one line: " << message;
}

INSTANTIATE_TEST_SUITE_P(
    EveryKindOfBadValue, InvalidValueTest,
    ::testing::Values(
        InvalidCase{"INTERVAL", "0", "positive number"},
        InvalidCase{"INTERVAL", "-1", "positive number"},
        InvalidCase{"INTERVAL", "fast", "positive number"},
        InvalidCase{"HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT_INTERVAL", "-5", ">= 0.001"},
        InvalidCase{"HAPROXY_BACKEND_SERVER_MIN_WEIGHT", "257", "0 to 256"},
        InvalidCase{"HAPROXY_BACKEND_SERVER_MIN_WEIGHT", "-1", "0 to 256"},
        InvalidCase{"HAPROXY_BACKEND_SERVER_MAX_WEIGHT", "300", "1 to 256"},
        InvalidCase{"HAPROXY_BACKEND_SERVER_MAX_WEIGHT", "ten", "1 to 256"},
        InvalidCase{"HAPROXY_BACKEND_SERVER_MIN_WEIGHT", "11", "<= HAPROXY_BACKEND_SERVER_MAX"},
        InvalidCase{"HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT", "0", "1 to 256"},
        InvalidCase{"SERVER_MODE", "k8s", "aws, consul or file"},
        InvalidCase{"STORE", "redis", "dynamodb, sqlite or etcd"},
        InvalidCase{"MAX_REMOVED_FRACTION", "1.5", "0 to 1"},
        InvalidCase{"MAX_REMOVED_FRACTION", "half", "0 to 1"},
        InvalidCase{"MASS_REMOVAL_DELAY", "-1", "positive number"},
        // Found in review: 0 (or a value read as 0) released a held removal at once, the guard
        // off without a word; MAX_REMOVED_FRACTION=1 is how it is turned off.
        InvalidCase{"MASS_REMOVAL_DELAY", "0", "positive number"},
        InvalidCase{"MASS_REMOVAL_DELAY", "0.0004", "positive number"},
        // A positive value below a millisecond was read as 0: a drain timeout of 0.
        InvalidCase{"HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT", "0.0004", "0, or a number of seconds"},
        InvalidCase{"LEADER_LEASE_SECONDS", "0", "positive number"},
        InvalidCase{"HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT", "soon", "0, or a number of seconds"},
        InvalidCase{"HAPROXY_FULL_SYNC_INTERVAL", "0", "positive number"},
        InvalidCase{"LOG_FORMAT", "xml", "text or json"},
        InvalidCase{"ETCD_ENDPOINTS", "127.0.0.1:2379", "http:// or https://"},
        InvalidCase{"HAPROXY_BACKEND_SERVERS_LIST_SIZE", "0", "1 to 100000"},
        InvalidCase{"HAPROXY_BACKEND_SERVERS_LIST_SIZE", "1.5", "1 to 100000"},
        InvalidCase{"HAPROXY_BACKEND_SERVER_PORT", "0", "1 to 65535"},
        InvalidCase{"HAPROXY_BACKEND_SERVER_PORT", "65536", "1 to 65535"},
        InvalidCase{"EXPORTER_PORT", "http", "1 to 65535"},
        InvalidCase{"EXPORTER_ADDRESS", "localhost", "IPv4 or IPv6"},
        InvalidCase{"AZ_LIMITER", "yes", "true or false"},
        InvalidCase{"HAPROXY_ADMISSION_GATING", "on", "true or false"},
        InvalidCase{"ALL_SERVERS_IN_FALLBACK_BACKEND", "1", "true or false"},
        InvalidCase{"DEBUG", "on", "true or false"},
        InvalidCase{"CONSUL_API_URL", "consul:8500", "http:// or https://"},
        InvalidCase{"HAPROXY_BACKEND_NAME", "be;shutdown", "HAProxy name"},
        InvalidCase{"HAPROXY_BACKEND_BASE_NAME", "srv/1", "HAProxy name"},
        InvalidCase{"HAPROXY_BACKEND_LIST", "be1:srv:99999", "backend:base_name:port"},
        InvalidCase{"HAPROXY_BACKEND_LIST", "be1", "backend:base_name:port"},
        InvalidCase{"AWS_MAX_ATTEMPTS", "0", "1 to 20"},
        InvalidCase{"HSDO_NODE_NAME", "edge node", "1-128 printable characters"},
        InvalidCase{"HSDO_NODE_NAME", std::string(129, 'n'), "1-128 printable characters"}),
    [](const auto& param_info) { return "case" + std::to_string(param_info.index); });

TEST_F(ConfigTest, NodeNameIsAnyPrintableTextWithoutSpaces) {
  EXPECT_EQ(Load({{"HSDO_NODE_NAME", "edge-1.eu/a"}})->node_name, "edge-1.eu/a");
  EXPECT_EQ(Load({{"HSDO_NODE_NAME", std::string(128, 'n')}})->node_name, std::string(128, 'n'));
}

TEST_F(ConfigTest, ErrorSaysWhereTheValueCameFrom) {
  WriteFile("INTERVAL: nope\n");
  auto config = Load();
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.error().message.find(path_), std::string::npos) << config.error().message;
}

TEST_F(ConfigTest, MalformedYamlGivesTheLine) {
  WriteFile("INTERVAL: 1\nDEBUG: [unclosed\n");
  auto config = Load();
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.error().message.find("line"), std::string::npos) << config.error().message;
}

TEST_F(ConfigTest, MissingFileIsFineUnlessRequired) {
  EXPECT_TRUE(LoadConfig(dir_.File("none.yaml"), false, {}).ok());
  auto required = LoadConfig(dir_.File("none.yaml"), true, {});
  ASSERT_FALSE(required.ok());
  EXPECT_EQ(required.error().code, ErrorCode::kNotFound);
}

TEST_F(ConfigTest, RoleValidation) {
  EXPECT_FALSE(ValidateForServer(*Load()).ok());
  EXPECT_FALSE(ValidateForServer(*Load({{"SERVER_MODE", "aws"}})).ok());
  EXPECT_TRUE(ValidateForServer(*Load({{"SERVER_MODE", "aws"}, {"SERVER_ASG_NAMES", "a"}})).ok());
  EXPECT_FALSE(ValidateForServer(*Load({{"SERVER_MODE", "consul"}})).ok());
  EXPECT_FALSE(ValidateForServer(*Load({{"SERVER_MODE", "file"}})).ok());
  EXPECT_FALSE(ValidateForClient(*Load()).ok());
  const Environment client = {{"HAPROXY_BACKEND_NAME", "be"}, {"HAPROXY_BACKEND_BASE_NAME", "s"}};
  EXPECT_TRUE(ValidateForClient(*Load(client)).ok());
  Environment limiter = client;
  limiter["AZ_LIMITER"] = "true";
  EXPECT_FALSE(ValidateForClient(*Load(limiter)).ok());
  limiter["HAPROXY_FALLBACK_BACKEND_NAME"] = "fb";
  limiter["HAPROXY_FALLBACK_BACKEND_BASE_NAME"] = "f";
  limiter["CLIENT_ASG_NAMES"] = "a";
  EXPECT_TRUE(ValidateForClient(*Load(limiter)).ok());
  // Found in review: a fallback that is also a primary backend (a copy-paste slip) made the
  // agent swap its servers between the two roles at every full sync; a backend listed twice
  // got each operation twice.
  limiter["HAPROXY_FALLBACK_BACKEND_NAME"] = "be";
  const auto same = ValidateForClient(*Load(limiter));
  ASSERT_FALSE(same.ok());
  EXPECT_NE(same.error().message.find("HAPROXY_FALLBACK_BACKEND_NAME=be"), std::string::npos);
  const auto twice =
      ValidateForClient(*Load({{"HAPROXY_BACKEND_LIST", "be1:srv, be2:web, be1:x"}}));
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.error().message.find("backend be1 twice"), std::string::npos);
}

TEST_F(ConfigTest, TheLeaderLeaseSpansAtLeastThreeCycles) {
  EXPECT_EQ(EffectiveLeaderLease(*Load()), 10s);  // the default, INTERVAL 1 s
  EXPECT_EQ(EffectiveLeaderLease(*Load({{"LEADER_LEASE_SECONDS", "2"}, {"INTERVAL", "0.2"}})), 2s);
  EXPECT_EQ(EffectiveLeaderLease(*Load({{"INTERVAL", "5"}})), 15s);
  EXPECT_EQ(EffectiveLeaderLease(*Load({{"LEADER_LEASE_SECONDS", "1"}, {"INTERVAL", "1"}})), 3s);
}

TEST_F(ConfigTest, AwsSettingsComeFromTheEnvironment) {
  auto config = Load({{"AWS_ACCESS_KEY_ID", "AKID"},
                      {"AWS_SECRET_ACCESS_KEY", "s3cr3t"},
                      {"AWS_PROFILE", "prod"},
                      {"AWS_REGION", "us-east-2"},
                      {"AWS_DEFAULT_REGION", "eu-west-1"},
                      {"AWS_EC2_METADATA_DISABLED", "TRUE"},
                      {"AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:5000"}});
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->aws.access_key_id, "AKID");
  EXPECT_EQ(config->aws.secret_access_key, "s3cr3t");
  EXPECT_EQ(config->aws.profile, "prod");
  EXPECT_EQ(config->aws.region, "us-east-2");
  EXPECT_EQ(config->aws.default_region, "eu-west-1");
  EXPECT_TRUE(config->aws.ec2_metadata_disabled);
  EXPECT_EQ(config->aws.endpoint_url_dynamodb, "http://127.0.0.1:5000");
}

TEST_F(ConfigTest, ShippedConfigFileLoads) {
  auto config = LoadConfig(HSDO_SOURCE_DIR "/conf/env.yaml", true, {});
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->interval, 1s);
  EXPECT_EQ(config->list_size, 10);
}

// --- The settings table ---------------------------------------------------------------

TEST_F(ConfigTest, ShippedEnvYamlListsEveryFileSettingWithItsDefaultAndNothingElse) {
  const YAML::Node root = YAML::LoadFile(HSDO_SOURCE_DIR "/conf/env.yaml");
  std::vector<std::string> in_file;
  for (const auto& entry : root) {
    const auto name = entry.first.as<std::string>();
    in_file.push_back(name);
    const std::string value = entry.second.IsNull() ? "" : entry.second.Scalar();
    const auto settings = DescribeSettings();
    const auto it = std::find_if(settings.begin(), settings.end(),
                                 [&](const SettingInfo& s) { return s.name == name; });
    ASSERT_NE(it, settings.end()) << name << " is in conf/env.yaml but not in the table";
    EXPECT_FALSE(it->environment_only) << name;
    EXPECT_EQ(value, it->default_text) << name << ": conf/env.yaml and the table differ";
  }
  std::vector<std::string> in_table;
  for (const auto& s : DescribeSettings()) {
    if (!s.environment_only) in_table.emplace_back(s.name);
  }
  EXPECT_EQ(in_file, in_table) << "conf/env.yaml must list the table's entries, in its order";
}

TEST_F(ConfigTest, TableDefaultsMatchTheConfigStructDefaults) {
  auto loaded = Load();
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  const auto from_table = EffectiveSettings(*loaded);
  const auto from_struct = EffectiveSettings(Config{});
  ASSERT_EQ(from_table.size(), from_struct.size());
  for (std::size_t i = 0; i < from_table.size(); ++i) {
    if (from_table[i].first == "ETCD_PREFIX") continue;  // derived from DYNAMODB_TABLE_NAME
    EXPECT_EQ(from_table[i], from_struct[i]);
  }
}

TEST_F(ConfigTest, HelpListsEveryVariableAndAlias) {
  const std::string help = SettingsHelp();
  for (const auto& s : DescribeSettings()) {
    EXPECT_NE(help.find(s.name), std::string::npos) << s.name;
    for (const auto alias : s.aliases) EXPECT_NE(help.find(alias), std::string::npos) << alias;
  }
}

TEST_F(ConfigTest, UnknownAndEnvironmentOnlyNamesInTheFileAreWarnings) {
  WriteFile("INTERVLA: 2\nAWS_REGION: us-east-1\nINTERVAL: 3\n");
  std::vector<std::string> warnings;
  auto config = LoadConfig(path_, true, {}, &warnings);
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->interval, 3s);
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_NE(warnings[0].find("unknown variable INTERVLA (ignored): did you mean INTERVAL?"),
            std::string::npos)
      << warnings[0];
  EXPECT_NE(warnings[1].find("AWS_REGION is read from the environment only"), std::string::npos)
      << warnings[1];
}

// Review of switching from the Python HSDO: it took a switch as on only for the text "true"
// (an unquoted YAML `true` is a boolean to its loader, and `True` another text), so such a
// value was off under its agents and is on under hsdo's: said, on DynamoDB (its one store).
TEST_F(ConfigTest, ASwitchThePythonHsdoTookAsOffIsAWarningOnDynamoDb) {
  const auto warned = [&](const std::string& file, const Environment& env) {
    WriteFile(file);
    std::vector<std::string> warnings;
    auto config = LoadConfig(path_, true, env, &warnings);
    EXPECT_TRUE(config.ok()) << config.error().message;
    std::string all;
    for (const auto& warning : warnings) all += warning + "\n";
    return all;
  };
  const std::string table = "DYNAMODB_TABLE_NAME: web\n";
  EXPECT_THAT(warned(table + "AZ_LIMITER: true\n", {}),
              HasSubstr("AZ_LIMITER=true (" + path_ +
                        ", an unquoted YAML boolean) is on, but Python HSDO agents reading this "
                        "table would take it as off"));
  EXPECT_THAT(warned(table + "CLIENT_DEDICATED_ASG: True\n", {}),
              HasSubstr("CLIENT_DEDICATED_ASG=True ("));
  EXPECT_THAT(warned(table, {{"AZ_LIMITER", "TRUE"}}),
              HasSubstr("AZ_LIMITER=TRUE (the environment)"));
  EXPECT_EQ(warned(table, {{"DEBUG", "TRUE"}}), "");  // only the logs
  EXPECT_EQ(warned(table + "AZ_LIMITER: \"true\"\nDEBUG: false\n", {}), "");
  EXPECT_EQ(warned(table, {{"AZ_LIMITER", "true"}, {"DEBUG", "true"}}), "");
  EXPECT_EQ(warned("AZ_LIMITER: true\n", {}), "");  // SQLite: no Python agent reads it
}

TEST_F(ConfigTest, AKeyGivenTwiceInTheFileIsAWarning) {
  WriteFile("INTERVAL: 2\nDEBUG: false\nINTERVAL: 2\n");
  std::vector<std::string> warnings;
  ASSERT_TRUE(LoadConfig(path_, true, {}, &warnings).ok());
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], HasSubstr("line 3: INTERVAL is given again (first on line 1)"));
}

// The Python HSDO (boto3) read AWS_DEFAULT_REGION only; hsdo takes AWS_REGION first.
TEST_F(ConfigTest, RegionsThatDifferAreAWarning) {
  WriteFile("AWS_DEFAULT_REGION: eu-west-1\n");
  std::vector<std::string> warnings;
  ASSERT_TRUE(LoadConfig(path_, true, {{"AWS_REGION", "us-east-1"}}, &warnings).ok());
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], HasSubstr("AWS_REGION=us-east-1 (the environment) and "
                                     "AWS_DEFAULT_REGION=eu-west-1 (" +
                                     path_ + ") differ: hsdo uses AWS_REGION"));
  warnings.clear();
  ASSERT_TRUE(LoadConfig(path_, true, {{"AWS_REGION", "eu-west-1"}}, &warnings).ok());
  EXPECT_TRUE(warnings.empty());
}

// Reconfiguration review: DYNAMODB_TABLE_NAME added to a shared env.yaml that names an SQLite
// file, STORE left unset, moved every process restarted after it to DynamoDB without a word.
TEST_F(ConfigTest, AnSqlitePathWithATableNameAndNoStoreIsAWarning) {
  WriteFile("SQLITE_PATH: /srv/hsdo/edge.db\nDYNAMODB_TABLE_NAME: web\n");
  std::vector<std::string> warnings;
  auto config = LoadConfig(path_, true, {}, &warnings);
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->store, StoreKind::kDynamoDb);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("SQLITE_PATH is set (from " + path_ +
                             ") but STORE is not, and DYNAMODB_TABLE_NAME is, so the store is "
                             "DynamoDB"),
            std::string::npos)
      << warnings[0];
  warnings.clear();
  WriteFile("SQLITE_PATH: /srv/hsdo/edge.db\nDYNAMODB_TABLE_NAME: web\nSTORE: sqlite\n");
  ASSERT_TRUE(LoadConfig(path_, true, {}, &warnings).ok());
  EXPECT_TRUE(warnings.empty());
  // The default path, as conf/env.yaml spells it out: a table name chooses DynamoDB, as the
  // seed's does, without a word.
  WriteFile("SQLITE_PATH: /var/lib/hsdo/hsdo.db\nDYNAMODB_TABLE_NAME: web\n");
  ASSERT_TRUE(LoadConfig(path_, true, {}, &warnings).ok());
  EXPECT_TRUE(warnings.empty());
}

// Found in review: conf/env.yaml installs readable by every user and has a line for
// CONSUL_HTTP_TOKEN and ETCD_PASSWORD; a secret put there was readable by all without a word.
TEST_F(ConfigTest, ASecretInAFileEveryUserCanReadIsAWarning) {
  WriteFile("CONSUL_HTTP_TOKEN: tok-123\nETCD_PASSWORD: pw-123\nINTERVAL: 2\n");
  std::vector<std::string> warnings;
  const std::string directory = dir_.path().string();
  ::chmod(directory.c_str(), 0755);  // as /etc/hsdo (a temporary directory is 0700)
  ::chmod(path_.c_str(), 0644);
  ASSERT_TRUE(LoadConfig(path_, true, {}, &warnings).ok());
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0], "config file " + path_ +
                             " holds CONSUL_HTTP_TOKEN, ETCD_PASSWORD and every user can read it: "
                             "put them into /etc/default/hsdo (mode 600), or make the file "
                             "readable by hsdo's group alone (chgrp hsdo; chmod 640)");
  warnings.clear();
  ::chmod(path_.c_str(), 0640);
  ASSERT_TRUE(LoadConfig(path_, true, {}, &warnings).ok());
  EXPECT_TRUE(warnings.empty()) << warnings[0];
  // (Review: readable by others, in a directory others cannot search: nobody else reads it.)
  ::chmod(path_.c_str(), 0644);
  ::chmod(directory.c_str(), 0750);
  ASSERT_TRUE(LoadConfig(path_, true, {}, &warnings).ok());
  ::chmod(directory.c_str(), 0755);
  EXPECT_TRUE(warnings.empty()) << warnings[0];
  // Empty secrets (as the installed file has them) are no secret.
  WriteFile("CONSUL_HTTP_TOKEN:\nETCD_PASSWORD: \"\"\n");
  ::chmod(path_.c_str(), 0644);
  ASSERT_TRUE(LoadConfig(path_, true, {}, &warnings).ok());
  EXPECT_TRUE(warnings.empty()) << warnings[0];
  // A file that cannot be read says why.
  auto missing = LoadConfig(dir_.File("missing.yaml"), true, {});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("missing.yaml: No such file or directory"),
            std::string::npos)
      << missing.error().message;
}

// Found in review: the AZ limiter's settings were accepted without a word while it was off (a
// forgotten AZ_LIMITER=true put every target in the primary backends).
TEST_F(ConfigTest, AzLimiterSettingsWhileItIsOffAreAWarning) {
  std::vector<std::string> warnings;
  ASSERT_TRUE(LoadConfig(path_, false,
                         {{"CLIENT_ASG_NAMES", "web-a"},
                          {"CLIENT_HAPROXY_FALLBACK_BACKEND_NAME", "fb"},
                          {"ALL_SERVERS_IN_FALLBACK_BACKEND", "true"}},
                         &warnings)
                  .ok());
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(
      warnings[0],
      "CLIENT_ASG_NAMES, CLIENT_HAPROXY_FALLBACK_BACKEND_NAME, ALL_SERVERS_IN_FALLBACK_BACKEND "
      "are set but AZ_LIMITER is false, so they have no effect: set AZ_LIMITER=true to "
      "route by availability zone");
  // On, or off with them empty or false (as conf/env.yaml has them): nothing to say.
  warnings.clear();
  ASSERT_TRUE(LoadConfig(path_, false,
                         {{"AZ_LIMITER", "true"},
                          {"CLIENT_ASG_NAMES", "web-a"},
                          {"HAPROXY_FALLBACK_BACKEND_NAME", "fb"}},
                         &warnings)
                  .ok());
  EXPECT_TRUE(warnings.empty()) << warnings[0];
  ASSERT_TRUE(LoadConfig(std::string(HSDO_SOURCE_DIR) + "/conf/env.yaml", true,
                         {{"SQLITE_PATH", dir_.File("x.db")}}, &warnings)
                  .ok());
  EXPECT_TRUE(warnings.empty()) << warnings[0];
}

// Found in review: a misspelt variable in the environment was ignored without a word, so
// HAPROXY_BACKEND_SERVER_DRAIN_TIMOUT=300 left every drain unwaited. The environment holds every
// program's variables, so only a name one typo from a setting (or an alias) is said.
TEST_F(ConfigTest, AVariableOneTypoFromASettingInTheEnvironmentIsAWarning) {
  std::vector<std::string> warnings;
  auto config = LoadConfig(path_, false,
                           {{"HAPROXY_BACKEND_SERVER_DRAIN_TIMOUT", "300"},  // a letter left out
                            {"MAX_REMOVED_FRACTINO", "0.1"},                 // two swapped
                            {"SERVER_ASG_NAME", "asg"},                      // an s left out
                            {"interval", "5"},                               // another case
                            {"CLIENT_DEDICATED_ASGS", "a"},                  // an alias's
                            {"MASS_REMOVAL_DELAX", "60"},                    // one replaced
                            {"AWS_ENDPOINT_URL_AUTOSCALING", "http://127.0.0.1:1"},  // (review)
                            // Other programs' variables, near but not one typo from a setting:
                            {"AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1"},
                            {"AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:1"},  // (review)
                            {"AWS_ENDPOINT_URL_ECS", "http://127.0.0.1:1"},
                            {"ETCDCTL_ENDPOINTS", "http://127.0.0.1:2379"},
                            {"CONSUL_HTTP_ADDR", "127.0.0.1:8500"},
                            {"HOSTNAME", "h"},
                            {"PATH", "/bin"},
                            {"INTERVAL", "2"}},
                           &warnings);
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->interval, 2s);
  const std::string all = fmt::format("{}", fmt::join(warnings, "\n"));
  EXPECT_EQ(warnings.size(), 7u) << all;
  for (const auto& [typo, meant] : std::vector<std::pair<std::string, std::string>>{
           {"HAPROXY_BACKEND_SERVER_DRAIN_TIMOUT", "HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT"},
           {"MAX_REMOVED_FRACTINO", "MAX_REMOVED_FRACTION"},
           {"SERVER_ASG_NAME", "SERVER_ASG_NAMES"},
           {"interval", "INTERVAL"},
           {"CLIENT_DEDICATED_ASGS", "CLIENT_DEDICATED_ASG"},
           {"MASS_REMOVAL_DELAX", "MASS_REMOVAL_DELAY"},
           {"AWS_ENDPOINT_URL_AUTOSCALING", "AWS_ENDPOINT_URL_AUTO_SCALING"}}) {
    EXPECT_NE(all.find(fmt::format("environment variable {} is not a setting of hsdo (ignored): "
                                   "did you mean {}?",
                                   typo, meant)),
              std::string::npos)
        << all;
  }
}

// Review (secrets that rotate): Consul's own CONSUL_HTTP_TOKEN_FILE was ignored (a warning
// said so), and a rotated CONSUL_HTTP_TOKEN needed a restart. Now it is read; an orchestrator
// of SERVER_MODE=consul checks it at start, and no other role or source reads it.
TEST_F(ConfigTest, ConsulsTokenFileIsReadAndCheckedAtStart) {
  const std::string token_path = (std::filesystem::path(path_).parent_path() / "token").string();
  std::ofstream(token_path) << "  3f1b9c2e-token\n";
  WriteFile(
      "INTERVAL: 2\nSERVER_MODE: consul\nCONSUL_API_URL: http://127.0.0.1:8500\n"
      "CONSUL_SERVICE_NAME: web\n");
  const Environment env{{"CONSUL_HTTP_TOKEN_FILE", token_path}};
  std::vector<std::string> warnings;
  auto config = LoadConfig(path_, true, env, &warnings);
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_TRUE(warnings.empty());
  EXPECT_EQ(config->consul.token_file, token_path);
  EXPECT_TRUE(config->consul.token.empty());
  EXPECT_TRUE(ValidateForServer(*config).ok());

  // Both (a host that exports both for Consul's own CLI): the variable, as before the file
  // setting existed, and a warning (review: an exit 2 stopped such hosts at the upgrade).
  auto both = LoadConfig(
      path_, true, {{"CONSUL_HTTP_TOKEN_FILE", token_path}, {"CONSUL_HTTP_TOKEN", "x"}}, &warnings);
  ASSERT_TRUE(both.ok()) << both.error().message;
  EXPECT_EQ(both->consul.token, "x");
  EXPECT_TRUE(both->consul.token_file.empty());
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("CONSUL_HTTP_TOKEN and CONSUL_HTTP_TOKEN_FILE are both set: "
                             "CONSUL_HTTP_TOKEN is used, and the file is not read"),
            std::string::npos)
      << warnings[0];
  EXPECT_TRUE(ValidateForServer(*both).ok());

  // A file that cannot hold a token, at start: the variable, the path, never the content.
  std::ofstream(token_path, std::ios::trunc) << "3f1b9c2e-token\nX-Injected: 1\n";
  auto invalid = ValidateForServer(*config);
  ASSERT_FALSE(invalid.ok());
  EXPECT_NE(invalid.error().message.find("invalid configuration: CONSUL_HTTP_TOKEN_FILE=\"" +
                                         token_path + "\": holds a control character"),
            std::string::npos)
      << invalid.error().message;
  EXPECT_EQ(invalid.error().message.find("3f1b9c2e"), std::string::npos);
  // Not written yet (a template renders it after hsdo starts), or empty: not an error at start
  // (review: an exit 2 there was final, the units do not restart on it).
  std::filesystem::remove(token_path);
  EXPECT_TRUE(ValidateForServer(*config).ok());
  std::ofstream(token_path) << "\n";
  EXPECT_TRUE(ValidateForServer(*config).ok());

  // Another source does not read it.
  WriteFile("INTERVAL: 2\nSERVER_MODE: file\nSERVER_FILE_PATH: " + path_ + "\n");
  auto file_source = LoadConfig(path_, true, env, &warnings);
  ASSERT_TRUE(file_source.ok()) << file_source.error().message;
  EXPECT_TRUE(ValidateForServer(*file_source).ok());
}

// Found in review: an empty variable in the environment (a blank line of /etc/default/hsdo,
// `-e VAR=$UNSET`) replaced the file's value with the default without a word: a drain timeout
// of 0, a looser removal guard. It still does (empty means unset, as documented), but says so,
// naming both, and never shows a secret.
TEST_F(ConfigTest, AnEmptyEnvironmentValueThatHidesTheFilesIsAWarning) {
  WriteFile("HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT: 300\nCONSUL_HTTP_TOKEN: tok-123\n");
  ::chmod(path_.c_str(), 0600);
  std::vector<std::string> warnings;
  auto config = LoadConfig(
      path_, true,
      {{"HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT", ""}, {"CONSUL_HTTP_TOKEN", ""}, {"INTERVAL", ""}},
      &warnings);
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->drain_timeout, 0s);
  ASSERT_EQ(warnings.size(), 2u);  // not INTERVAL: the file does not set it
  EXPECT_NE(warnings[0].find("CONSUL_HTTP_TOKEN is set but empty"), std::string::npos)
      << warnings[0];
  EXPECT_EQ(warnings[0].find("tok-123"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[1].find("HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT is set but empty in the "
                             "environment: it hides HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT=\"300\""),
            std::string::npos)
      << warnings[1];
  EXPECT_NE(warnings[1].find("default (\"0\")"), std::string::npos) << warnings[1];
}

TEST_F(ConfigTest, EffectiveSettingsMaskSecrets) {
  auto config = Load({{"CONSUL_HTTP_TOKEN", "tok-123"},
                      {"ETCD_PASSWORD", "pw"},
                      {"AWS_SECRET_ACCESS_KEY", "sk"},
                      {"AWS_ACCESS_KEY_ID", "AKID"}});
  ASSERT_TRUE(config.ok()) << config.error().message;
  std::string all;
  for (const auto& [name, value] : EffectiveSettings(*config)) all += name + "=" + value + "\n";
  for (const char* secret : {"tok-123", "=pw\n", "=sk\n"}) {
    EXPECT_EQ(all.find(secret), std::string::npos) << secret;
  }
  EXPECT_NE(all.find("CONSUL_HTTP_TOKEN=<hidden>"), std::string::npos);
  EXPECT_NE(all.find("AWS_ACCESS_KEY_ID=AKID"), std::string::npos);
}

// Security review: the metadata and container endpoints, text settings that no URL check
// reads, were shown as given, their user info too.
TEST_F(ConfigTest, EffectiveSettingsHideEveryUrlThatMayHoldACredential) {
  auto config = Load({{"AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://u:SeCrEt@127.0.0.1:1/"},
                      {"AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://u:SeCrEt@127.0.0.1:2"}});
  ASSERT_TRUE(config.ok()) << config.error().message;
  std::string all;
  for (const auto& [name, value] : EffectiveSettings(*config)) all += name + "=" + value + "\n";
  EXPECT_EQ(all.find("SeCrEt"), std::string::npos) << all;
  EXPECT_NE(all.find("AWS_EC2_METADATA_SERVICE_ENDPOINT=<hidden: it has user info"),
            std::string::npos);
}

// --- The Python HSDO's names (issue 11.1) ------------------------------------------------

std::vector<std::pair<std::string, std::string>> EffectiveOf(const std::string& path,
                                                             const Environment& env = {}) {
  std::vector<std::string> warnings;
  auto config = LoadConfig(path, true, env, &warnings);
  EXPECT_TRUE(config.ok()) << (config.ok() ? "" : config.error().message);
  EXPECT_TRUE(warnings.empty()) << warnings.front();
  return config.ok() ? EffectiveSettings(*config)
                     : std::vector<std::pair<std::string, std::string>>{};
}

TEST_F(ConfigTest, PythonHsdoFileGivesTheSameSettingsAsHsdoNames) {
  const auto python = EffectiveOf(HSDO_SOURCE_DIR "/tests/testdata/python-hsdo-env.yaml");
  const auto hsdo = EffectiveOf(HSDO_SOURCE_DIR "/tests/testdata/hsdo-names-env.yaml");
  EXPECT_EQ(python, hsdo);
  auto config = LoadConfig(HSDO_SOURCE_DIR "/tests/testdata/python-hsdo-env.yaml", true, {});
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->consul.api_url, "http://127.0.0.1:8500");
  EXPECT_EQ(config->min_weight, 2);
  EXPECT_EQ(config->increase_weight_interval, 15s);
  EXPECT_TRUE(config->az_limiter);
  EXPECT_EQ(config->exporter_port, 9000);
  EXPECT_EQ(config->backends,
            (std::vector<BackendConfig>{{"http-back", "web", 8080}, {"api-back", "api", 9090}}));
  EXPECT_EQ(config->FallbackBackend(), (BackendConfig{"http-fallback", "fb", 8080}));
  EXPECT_TRUE(ValidateForClient(*config).ok());
}

TEST_F(ConfigTest, PythonNamesFromTheEnvironment) {
  auto config =
      Load({{"SERVER_CONSUL_API_URL", "http://127.0.0.1:8500"},
            {"CLIENT_DEDICATED_ASG", "true"},
            {"CLIENT_HAPROXY_BACKEND_SERVER_PORT", "81"},
            {"CLIENT_HAPROXY_BACKEND_LIST",
             R"({"be1": {"baseName": "a", "serverPort": "9001"}, "be2": {"baseName": "b"}})"}});
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->consul.api_url, "http://127.0.0.1:8500");
  EXPECT_TRUE(config->az_limiter);
  EXPECT_EQ(config->backends, (std::vector<BackendConfig>{{"be1", "a", 9001}, {"be2", "b", 81}}));
  auto plain = Load({{"CLIENT_HAPROXY_BACKEND_LIST", "be1:a:9001"}});
  ASSERT_TRUE(plain.ok()) << plain.error().message;
  EXPECT_EQ(plain->backends, (std::vector<BackendConfig>{{"be1", "a", 9001}}));
}

TEST_F(ConfigTest, BothSpellingsWithDifferentValuesNameBoth) {
  auto env = Load({{"HAPROXY_BACKEND_NAME", "a"}, {"CLIENT_HAPROXY_BACKEND_NAME", "b"}});
  ASSERT_FALSE(env.ok());
  EXPECT_EQ(env.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(env.error().message.find("HAPROXY_BACKEND_NAME=\"a\""), std::string::npos)
      << env.error().message;
  EXPECT_NE(env.error().message.find("CLIENT_HAPROXY_BACKEND_NAME=\"b\""), std::string::npos);

  WriteFile("HAPROXY_SOCKET_PATH: /a.sock\nCLIENT_HAPROXY_SOCKET_PATH: /b.sock\n");
  auto file = Load();
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.error().message.find("CLIENT_HAPROXY_SOCKET_PATH"), std::string::npos);

  // The same value twice is fine; the environment (any spelling) wins over the file.
  WriteFile("HAPROXY_BACKEND_NAME: a\nCLIENT_HAPROXY_BACKEND_NAME: a\n");
  auto same = Load({{"CLIENT_HAPROXY_BACKEND_NAME", "c"}});
  ASSERT_TRUE(same.ok()) << same.error().message;
  EXPECT_EQ(same->backend_name, "c");

  auto secret = Load({{"CONSUL_HTTP_TOKEN", "s1"}});
  ASSERT_TRUE(secret.ok());
}

// Found in review (rolling upgrades): one env.yaml serves the fleet, and a value an older
// hsdo accepted but this one refuses (MASS_REMOVAL_DELAY: 0) stopped every upgraded agent
// (exit 2), though only the orchestrator reads it: those agents managed their HAProxy no more.
// A process warns of the other role's invalid settings and keeps their default; `hsdo config`
// and a process of the role that reads it still refuse them.
TEST_F(ConfigTest, AnInvalidSettingOfTheOtherRoleIsAWarning) {
  const Environment orchestrators = {{"MASS_REMOVAL_DELAY", "0"}};
  const Environment agents = {{"HAPROXY_FULL_SYNC_INTERVAL", "soon"}};
  std::vector<std::string> warnings;
  auto agent = LoadConfig(path_, false, orchestrators, &warnings, SettingRole::kClient);
  ASSERT_TRUE(agent.ok()) << agent.error().message;
  EXPECT_EQ(agent->mass_removal_delay, std::chrono::seconds(60));
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("MASS_REMOVAL_DELAY=\"0\""), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("only the orchestrator reads it"), std::string::npos) << warnings[0];
  warnings.clear();
  auto orchestrator = LoadConfig(path_, false, agents, &warnings, SettingRole::kServer);
  ASSERT_TRUE(orchestrator.ok()) << orchestrator.error().message;
  EXPECT_EQ(warnings.size(), 1u);

  EXPECT_FALSE(LoadConfig(path_, false, orchestrators, nullptr, SettingRole::kServer).ok());
  EXPECT_FALSE(LoadConfig(path_, false, agents, nullptr, SettingRole::kClient).ok());
  EXPECT_FALSE(LoadConfig(path_, false, orchestrators).ok());
  // A setting both read is refused by both.
  EXPECT_FALSE(
      LoadConfig(path_, false, {{"INTERVAL", "soon"}}, nullptr, SettingRole::kClient).ok());
  // Review: one without a default, and the ramp's weights, which only the orchestrator reads
  // (a MAX_WEIGHT the agent had left at its default was then below MIN_WEIGHT).
  for (const Environment& env : {Environment{{"SERVER_MODE", "k8s"}},
                                 Environment{{"HAPROXY_BACKEND_SERVER_MIN_WEIGHT", "20"},
                                             {"HAPROXY_BACKEND_SERVER_MAX_WEIGHT", "300"}}}) {
    EXPECT_TRUE(LoadConfig(path_, false, env, &warnings, SettingRole::kClient).ok())
        << env.begin()->first;
    EXPECT_FALSE(LoadConfig(path_, false, env, nullptr, SettingRole::kServer).ok())
        << env.begin()->first;
  }
  // Valid weights in the wrong order: the orchestrator's ramp refuses them; agents go on.
  const Environment crossed = {{"HAPROXY_BACKEND_SERVER_MIN_WEIGHT", "20"},
                               {"HAPROXY_BACKEND_SERVER_MAX_WEIGHT", "10"}};
  EXPECT_FALSE(LoadConfig(path_, false, crossed, nullptr, SettingRole::kServer).ok());
  EXPECT_TRUE(LoadConfig(path_, false, crossed, nullptr, SettingRole::kClient).ok());
  // The orchestrator names its lease after HSDO_NODE_NAME: both roles read it.
  EXPECT_FALSE(
      LoadConfig(path_, false, {{"HSDO_NODE_NAME", "a b"}}, nullptr, SettingRole::kServer).ok());
}

TEST_F(ConfigTest, AnInvalidAliasValueNamesTheAliasAndHsdosName) {
  WriteFile("CLIENT_DEDICATED_ASG: maybe\n");
  auto config = Load();
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.error().message.find(
                "CLIENT_DEDICATED_ASG=\"maybe\" (alias of AZ_LIMITER, from " + path_ + ")"),
            std::string::npos)
      << config.error().message;
}

// --- Where the configuration is found (issue 11.3) -----------------------------------------

TEST_F(ConfigTest, ConfigFileLookupOrder) {
  const auto none = [](const std::string&) { return false; };
  const auto all = [](const std::string&) { return true; };
  const auto etc_only = [](const std::string& p) { return p == "/etc/hsdo/env.yaml"; };
  auto flag = LocateConfigFile("/x.yaml", {{"HSDO_CONFIG", "/y.yaml"}}, all);
  EXPECT_EQ(flag.path, "/x.yaml");
  EXPECT_TRUE(flag.must_exist);
  auto env = LocateConfigFile("", {{"HSDO_CONFIG", "/y.yaml"}}, all);
  EXPECT_EQ(env.path, "/y.yaml");
  EXPECT_TRUE(env.must_exist);
  EXPECT_EQ(LocateConfigFile("", {}, all).path, "conf/env.yaml");
  EXPECT_FALSE(LocateConfigFile("", {}, all).must_exist);
  EXPECT_EQ(LocateConfigFile("", {}, etc_only).path, "/etc/hsdo/env.yaml");
  EXPECT_EQ(LocateConfigFile("", {{"HSDO_CONFIG", ""}}, none).path, "");
}

TEST_F(ConfigTest, ADirectoryAsConfigFileIsAConfigError) {
  auto config = LoadConfig(dir_.path().string(), true, {});
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(config.error().message.find("not a regular file"), std::string::npos);
}

// --- Strict validation (issue 8.9) ---------------------------------------------------------

TEST_F(ConfigTest, ControlCharactersAreRejectedAndSecretsNeverShown) {
  auto token = Load({{"CONSUL_HTTP_TOKEN", "abc\r\nX-Injected: 1"}});
  ASSERT_FALSE(token.ok());
  const auto& message = token.error().message;
  EXPECT_EQ(token.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(message.find("CONSUL_HTTP_TOKEN"), std::string::npos) << message;
  EXPECT_NE(message.find("control characters"), std::string::npos) << message;
  EXPECT_EQ(message.find("abc"), std::string::npos) << "a secret in: " << message;
  EXPECT_EQ(message.find_first_of("\r\n"), std::string::npos) << message;

  WriteFile("SQLITE_PATH: \"/tmp/a\\nb.db\"\n");
  auto file = Load();
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.error().message.find("SQLITE_PATH=\"/tmp/a\\nb.db\""), std::string::npos)
      << file.error().message;
}

TEST_F(ConfigTest, FilesThatCannotBeReadAreRejected) {
  const std::string cert = dir_.File("ca.pem");
  std::ofstream(cert) << "x";
  for (const char* name : {"ETCD_CACERT", "ETCD_CERT", "ETCD_KEY", "AWS_CA_BUNDLE"}) {
    EXPECT_TRUE(Load({{name, cert}}).ok()) << name;
    auto missing = Load({{name, dir_.File("nope.pem")}});
    ASSERT_FALSE(missing.ok()) << name;
    EXPECT_NE(missing.error().message.find(name), std::string::npos);
    EXPECT_NE(missing.error().message.find("a readable file"), std::string::npos);
    EXPECT_FALSE(Load({{name, dir_.path().string()}}).ok()) << name << " = a directory";
  }
}

// Found in review: Consul's files were checked for every role, so an agent (or an orchestrator
// of another source) whose shared configuration names a Consul CA it never reads, absent on
// its host, exited 2, and systemd kept it down (RestartPreventExitStatus=2).
Environment Merged(Environment env, const Environment& more) {
  for (const auto& [name, value] : more) env[name] = value;
  return env;
}

TEST_F(ConfigTest, ConsulFilesAreReadableWhenTheConsulSourceStarts) {
  const std::string cert = dir_.File("ca.pem");
  std::ofstream(cert) << "x";
  for (const char* name : {"CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY"}) {
    const Environment consul = {{"SERVER_MODE", "consul"},
                                {"CONSUL_API_URL", "http://127.0.0.1:8500"},
                                {"CONSUL_SERVICE_NAME", "web"},
                                {"HAPROXY_BACKEND_NAME", "be"},
                                {"HAPROXY_BACKEND_BASE_NAME", "s"}};
    auto missing = Load(Merged(consul, {{name, dir_.File("nope.pem")}}));
    ASSERT_TRUE(missing.ok()) << name << ": " << missing.error().message;
    EXPECT_TRUE(ValidateForClient(*missing).ok()) << name;
    auto server = ValidateForServer(*missing);
    ASSERT_FALSE(server.ok()) << name;
    EXPECT_EQ(server.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(server.error().message.find(name), std::string::npos) << server.error().message;
    EXPECT_NE(server.error().message.find("a readable file"), std::string::npos);
    auto directory = Load(Merged(consul, {{name, dir_.path().string()}}));
    ASSERT_TRUE(directory.ok());
    EXPECT_FALSE(ValidateForServer(*directory).ok()) << name << " = a directory";
    EXPECT_TRUE(ValidateForServer(*Load(Merged(consul, {{name, cert}}))).ok()) << name;
    // Another source does not read it.
    const Environment file = {
        {"SERVER_MODE", "file"}, {"SERVER_FILE_PATH", cert}, {name, dir_.File("nope.pem")}};
    EXPECT_TRUE(ValidateForServer(*Load(file)).ok()) << name;
  }
}

TEST_F(ConfigTest, TargetsFileMustExistAtStart) {
  const Environment env = {{"SERVER_MODE", "file"}, {"SERVER_FILE_PATH", dir_.File("t.yaml")}};
  auto missing = ValidateForServer(*Load(env));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("SERVER_FILE_PATH"), std::string::npos);
  std::ofstream(dir_.File("t.yaml")) << "targets: []\n";
  EXPECT_TRUE(ValidateForServer(*Load(env)).ok());
}

// A URL with user info, a query or a fragment is refused (hsdo appends its own paths; "?token="
// would be printed by `hsdo config`), and its error does not print what they may hold.
TEST_F(ConfigTest, AUrlWithCredentialsIsRefusedWithoutShowingThem) {
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"CONSUL_API_URL", "http://admin:pw-1234@127.0.0.1:8500"},
           {"CONSUL_API_URL", "http://127.0.0.1:8500/v1?token=pw-1234"},
           {"AWS_ENDPOINT_URL", "http://127.0.0.1:5000/#pw-1234"},
           {"ETCD_ENDPOINTS", "http://a:2379,https://root:pw-1234@b:2379/x,http://c:2379"},
           {"ETCD_ENDPOINTS", "http://a:2379?pw-1234,http://c:2379"},
           // (Review: a password holding '/', '?' or ',', or no scheme.)
           {"CONSUL_API_URL", "http://admin:pw/-1234@127.0.0.1:8500"},
           {"CONSUL_API_URL", "http://admin:pw?-1234@127.0.0.1:8500"},
           {"CONSUL_API_URL", "http://admin:pw,-1234@127.0.0.1:8500"},
           {"CONSUL_API_URL", "admin:pw-1234@127.0.0.1:8500"}}) {
    auto config = Load({{name, value}});
    ASSERT_FALSE(config.ok()) << value;
    const auto& message = config.error().message;
    EXPECT_NE(message.find(name + "=<hidden: it has user info, a query or a fragment>"),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("no user info, query or fragment"), std::string::npos) << message;
    EXPECT_EQ(message.find("1234"), std::string::npos) << "a credential in: " << message;
    EXPECT_EQ(message.find("admin"), std::string::npos) << "a user in: " << message;
  }
  // Other settings show an '@' as it is (a socket path's unix@).
  auto socket = Load({{"HAPROXY_SOCKET_PATH", "unix@/" + std::string(120, 's')}});
  ASSERT_FALSE(socket.ok());
  EXPECT_NE(socket.error().message.find("HAPROXY_SOCKET_PATH=\"unix@/"), std::string::npos)
      << socket.error().message;
}

// IPv6 review: HAProxy's other address prefixes were taken for relative unix paths, accepted at
// start, and every cycle failed to connect.
TEST_F(ConfigTest, ASocketAddressOfAnotherFormIsRefused) {
  for (const char* value : {"tcp6@[::1]:9999", "tcp@127.0.0.1:9999", "abns@haproxy", "fd@3"}) {
    auto config = Load({{"HAPROXY_SOCKET_PATH", value}});
    ASSERT_FALSE(config.ok()) << value;
    EXPECT_NE(config.error().message.find("ipv6@[address]:port"), std::string::npos)
        << config.error().message;
  }
  for (const char* value : {"ipv6@[::1]:9999", "ipv4@127.0.0.1:9999", "unix@/run/h.sock",
                            "/run/haproxy@1/admin.sock", "admin.sock"}) {
    EXPECT_TRUE(Load({{"HAPROXY_SOCKET_PATH", value}}).ok()) << value;
  }
}

TEST_F(ConfigTest, ValidValuesOfTheStrictKindsLoad) {
  auto config = Load({{"AWS_REGION", "us-gov-west-1"},
                      {"AWS_DEFAULT_REGION", "eu-central-2"},
                      {"DYNAMODB_TABLE_NAME", "My_Table.v2-prod"},
                      {"AWS_ENDPOINT_URL", "http://127.0.0.1:5000"},
                      {"AWS_ENDPOINT_URL_DYNAMODB", "https://dynamodb.eu-west-1.amazonaws.com/"},
                      {"CONSUL_API_URL", "http://[::1]:8500/"},
                      {"STORE", "etcd"},
                      {"ETCD_ENDPOINTS", "http://localhost:2379,https://10.0.0.1:2379"},
                      {"HAPROXY_SOCKET_PATH", "unix@/run/haproxy/admin.sock"}});
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->consul.api_url, "http://[::1]:8500");
  EXPECT_TRUE(Load({{"HAPROXY_SOCKET_PATH", "ipv4@127.0.0.1:9999"}}).ok());
  EXPECT_TRUE(Load({{"HAPROXY_SOCKET_PATH", "/" + std::string(106, 's')}}).ok());
}

INSTANTIATE_TEST_SUITE_P(
    StrictValues, InvalidValueTest,
    ::testing::Values(InvalidCase{"AWS_REGION", "x@127.0.0.1:5000/#", "AWS region"},
                      InvalidCase{"AWS_DEFAULT_REGION", "us-east-1.evil.com", "AWS region"},
                      InvalidCase{"AWS_DEFAULT_REGION", "US-EAST-1", "AWS region"},
                      InvalidCase{"DYNAMODB_TABLE_NAME", "ab", "3-255"},
                      InvalidCase{"DYNAMODB_TABLE_NAME", "a/b/c", "3-255"},
                      InvalidCase{"DYNAMODB_TABLE_NAME", std::string(256, 't'), "3-255"},
                      InvalidCase{"CONSUL_API_URL", "http://", "with a host"},
                      InvalidCase{"CONSUL_API_URL", "http://:8500/v1", "with a host"},
                      InvalidCase{"AWS_ENDPOINT_URL", "http:///x", "with a host"},
                      InvalidCase{"AWS_ENDPOINT_URL_DYNAMODB", "127.0.0.1:5000", "with a host"},
                      InvalidCase{"AWS_ENDPOINT_URL_STS", "http://h:0", "with a host"},
                      InvalidCase{"ETCD_ENDPOINTS", "http://127.0.0.1:2379,http://", "with a host"},
                      InvalidCase{"HAPROXY_SOCKET_PATH", "/" + std::string(107, 's'),
                                  "at most 107 bytes"}),
    [](const auto& param_info) { return "strict" + std::to_string(param_info.index); });

}  // namespace
}  // namespace hsdo
