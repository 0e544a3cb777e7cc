#include "consul/health_service.h"

#include <gtest/gtest.h>

namespace hsdo::consul {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

ConsulConfig BaseConfig() {
  ConsulConfig config;
  config.api_url = "http://127.0.0.1:8500";
  config.service_names = {"web"};
  return config;
}

TEST(HealthServiceUrl, NeverPassingSinceInstancesInMaintenanceMustDrain) {
  // ?passing would leave out the instances in maintenance; ParseHealthService filters.
  EXPECT_EQ(HealthServiceUrl(BaseConfig(), "web", 0, seconds{5}),
            "http://127.0.0.1:8500/v1/health/service/web");
  auto config = BaseConfig();
  config.passing_only = false;
  EXPECT_EQ(HealthServiceUrl(config, "web", 0, seconds{5}),
            "http://127.0.0.1:8500/v1/health/service/web");
}

TEST(HealthServiceUrl, BlockingWithDatacenterAndTagFilter) {
  auto config = BaseConfig();
  config.api_url = "https://consul.example:8501/";
  config.datacenter = "eu west";
  config.tag = "primary";
  EXPECT_EQ(HealthServiceUrl(config, "my web", 42, milliseconds{1500}),
            "https://consul.example:8501/v1/health/service/my%20web?dc=eu%20west"
            "&filter=%22primary%22%20in%20Service.Tags&index=42&wait=1500ms");
}

TEST(CatalogServicesUrl, InTheDatacenterWhenSet) {
  auto config = BaseConfig();
  EXPECT_EQ(CatalogServicesUrl(config), "http://127.0.0.1:8500/v1/catalog/services");
  config.api_url = "https://consul.example:8501/";
  config.datacenter = "eu west";
  EXPECT_EQ(CatalogServicesUrl(config),
            "https://consul.example:8501/v1/catalog/services?dc=eu%20west");
}

TEST(CheckServiceKnown, AServiceOrTagConsulDoesNotKnowIsNotFound) {
  const std::string body = R"({"consul": [], "web": ["primary", "v2"], "api": null})";
  EXPECT_TRUE(CheckServiceKnown(body, "web", "").ok());
  EXPECT_TRUE(CheckServiceKnown(body, "web", "v2").ok());
  EXPECT_TRUE(CheckServiceKnown(body, "api", "").ok());
  auto typo = CheckServiceKnown(body, "wbe", "");
  ASSERT_FALSE(typo.ok());
  EXPECT_EQ(typo.error().code, ErrorCode::kNotFound);
  EXPECT_NE(typo.error().message.find("CONSUL_SERVICE_NAME"), std::string::npos);
  auto tag = CheckServiceKnown(body, "web", "primray");
  ASSERT_FALSE(tag.ok());
  EXPECT_EQ(tag.error().code, ErrorCode::kNotFound);
  EXPECT_NE(tag.error().message.find("CONSUL_SERVICE_TAG"), std::string::npos);
  EXPECT_FALSE(CheckServiceKnown(body, "api", "v2").ok());
  for (const char* broken : {"", "[]", "{", "\"web\""}) {
    auto result = CheckServiceKnown(broken, "web", "");
    ASSERT_FALSE(result.ok()) << broken;
    EXPECT_EQ(result.error().code, ErrorCode::kInvalidArgument) << broken;
  }
}

TEST(TagFilter, QuotesTheTag) {
  EXPECT_EQ(TagFilter("v1"), "\"v1\" in Service.Tags");
  EXPECT_EQ(TagFilter("a\"b\\c"), "\"a\\\"b\\\\c\" in Service.Tags");
}

constexpr const char* kTwoInstances = R"json([
  {
    "Node": {"Node": "node-b", "Address": "10.0.0.2", "Meta": {"zone": "eu-west-1b"}},
    "Service": {"ID": "web-2", "Service": "web", "Address": "", "Port": 8080,
                "Meta": {}, "CreateIndex": 20},
    "Checks": [{"Status": "passing"}]
  },
  {
    "Node": {"Node": "node-a", "Address": "10.0.0.1", "Meta": {"zone": "eu-west-1a"}},
    "Service": {"ID": "web-1", "Service": "web", "Address": "192.168.1.10", "Port": 8080,
                "Meta": {"zone": "eu-west-1c"}, "CreateIndex": 10},
    "Checks": [{"Status": "passing"}]
  }
])json";

TEST(ParseHealthService, MapsInstancesOldestFirst) {
  auto answer = ParseHealthService(kTwoInstances, "web", "zone");
  ASSERT_TRUE(answer.ok()) << answer.error().message;
  ASSERT_EQ(answer->instances.size(), 2u);
  EXPECT_TRUE(answer->skipped.empty());
  const Target& first = answer->instances[0].target;
  // The service address wins over the node address; the service meta over the node meta.
  EXPECT_EQ(first.address, "192.168.1.10");
  EXPECT_EQ(first.port, 8080);
  EXPECT_EQ(first.name, "node-a/web-1");
  EXPECT_EQ(first.group, "web");
  EXPECT_EQ(first.az, "eu-west-1c");
  const Target& second = answer->instances[1].target;
  // No service address: the node's; no service meta key: the node's.
  EXPECT_EQ(second.address, "10.0.0.2");
  EXPECT_EQ(second.name, "node-b/web-2");
  EXPECT_EQ(second.az, "eu-west-1b");
}

TEST(ParseHealthService, NoAzWithoutAMetaKey) {
  auto answer = ParseHealthService(kTwoInstances, "web", "");
  ASSERT_TRUE(answer.ok());
  for (const auto& instance : answer->instances) EXPECT_EQ(instance.target.az, "");
}

// Review (Consul semantics): a Connect sidecar proxy registered under the service's name became
// a target at its mTLS port, silently. Kept (gateways may be balanced onto by name), but said.
TEST(ParseHealthService, AnInstanceThatIsNoPlainServiceIsKeptAndSaid) {
  constexpr const char* kBody = R"json([
    {"Node": {"Node": "n1", "Address": "10.0.0.1"},
     "Service": {"ID": "web-1", "Address": "", "Port": 80, "CreateIndex": 5}},
    {"Node": {"Node": "n1", "Address": "10.0.0.1"},
     "Service": {"ID": "web-1-sidecar-proxy", "Kind": "connect-proxy", "Address": "",
                 "Port": 21000, "CreateIndex": 6}}
  ])json";
  auto answer = ParseHealthService(kBody, "web", "");
  ASSERT_TRUE(answer.ok()) << answer.error().message;
  EXPECT_EQ(answer->instances.size(), 2u);
  ASSERT_EQ(answer->not_plain.size(), 1u);
  EXPECT_NE(answer->not_plain[0].find("connect-proxy"), std::string::npos) << answer->not_plain[0];
  EXPECT_NE(answer->not_plain[0].find("21000"), std::string::npos) << answer->not_plain[0];
}

// Review (Consul semantics): the tag was filtered by Consul alone. A Consul that ignores the
// query's `filter` (older than 1.5) answers every instance of the service, and each took a slot.
TEST(ParseHealthService, AnInstanceWithoutTheTagIsSkippedAndSaid) {
  constexpr const char* kBody = R"json([
    {"Node": {"Node": "n1", "Address": "10.0.0.1"},
     "Service": {"ID": "canary", "Address": "", "Port": 80, "Tags": ["v2", "canary"]}},
    {"Node": {"Node": "n2", "Address": "10.0.0.2"},
     "Service": {"ID": "stable", "Address": "", "Port": 80, "Tags": ["v1"]}},
    {"Node": {"Node": "n3", "Address": "10.0.0.3"},
     "Service": {"ID": "untagged", "Address": "", "Port": 80, "Tags": null}},
    {"Node": {"Node": "n4", "Address": "10.0.0.4"},
     "Service": {"ID": "no-tags", "Address": "", "Port": 80}}
  ])json";
  auto answer = ParseHealthService(kBody, "web", "", false, "canary");
  ASSERT_TRUE(answer.ok()) << answer.error().message;
  ASSERT_EQ(answer->instances.size(), 1u);
  EXPECT_EQ(answer->instances[0].target.name, "n1/canary");
  ASSERT_EQ(answer->skipped.size(), 3u);
  EXPECT_NE(answer->skipped[0].find("(n2/stable): without the tag \"canary\" "
                                    "(CONSUL_SERVICE_TAG): Consul did not apply the query's "
                                    "filter"),
            std::string::npos)
      << answer->skipped[0];
  // Without a tag configured, every instance is kept.
  auto all = ParseHealthService(kBody, "web", "");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->instances.size(), 4u);
  EXPECT_TRUE(all->skipped.empty());
}

TEST(ParseHealthService, SkipsInvalidInstancesAndKeepsTheRest) {
  constexpr const char* kBody = R"json([
    {"Node": {"Node": "n1", "Address": "10.0.0.1"},
     "Service": {"ID": "ok", "Address": "", "Port": 80, "CreateIndex": 5}},
    {"Node": {"Node": "n2", "Address": "10.0.0.2"},
     "Service": {"ID": "hostname", "Address": "web.internal", "Port": 80}},
    {"Node": {"Node": "n3", "Address": "not-an-ip"},
     "Service": {"ID": "nodehost", "Address": "", "Port": 80}},
    {"Node": {"Node": "n4", "Address": "10.0.0.4"},
     "Service": {"ID": "bad port", "Address": "", "Port": 70000}},
    {"Node": {"Node": "n5", "Address": "10.0.0.5"},
     "Service": {"ID": "tab\tid", "Address": "", "Port": 80}},
    {"Node": {"Node": "n8", "Address": "10.0.0.8"},
     "Service": {"ID": "all-interfaces", "Address": "0.0.0.0", "Port": 80}},
    {"Node": {"Node": "n9", "Address": "10.0.0.9"},
     "Service": {"ID": "metadata", "Address": "169.254.169.254", "Port": 80}},
    {"Node": {"Node": "n6", "Address": "10.0.0.6"}},
    "garbage",
    {"Node": {"Node": "n7", "Address": "2001:DB8::7"},
     "Service": {"ID": "v6", "Address": "", "Port": 0, "CreateIndex": 6}}
  ])json";
  auto answer = ParseHealthService(kBody, "web", "");
  ASSERT_TRUE(answer.ok()) << answer.error().message;
  ASSERT_EQ(answer->instances.size(), 3u);
  EXPECT_EQ(answer->instances[0].target.name, "n1/ok");
  EXPECT_EQ(answer->instances[1].target.address, "2001:db8::7");
  EXPECT_EQ(answer->instances[1].target.port, std::nullopt);  // port 0: not set
  // A name that is not printable ASCII is made so, not a reason to leave the instance out.
  EXPECT_EQ(answer->instances[2].target.name, "n5/tab?id");
  ASSERT_EQ(answer->skipped.size(), 7u);
  EXPECT_NE(answer->skipped[0].find("web.internal"), std::string::npos);
  EXPECT_NE(answer->skipped[3].find("0.0.0.0"), std::string::npos) << answer->skipped[3];
  EXPECT_NE(answer->skipped[4].find("169.254.169.254"), std::string::npos) << answer->skipped[4];
}

TEST(ParseHealthService, EmptyListIsAnAnswer) {
  auto answer = ParseHealthService("[]", "web", "");
  ASSERT_TRUE(answer.ok());
  EXPECT_TRUE(answer->instances.empty());
}

TEST(ParseHealthService, InvalidBodiesAreErrors) {
  EXPECT_FALSE(ParseHealthService("", "web", "").ok());
  EXPECT_FALSE(ParseHealthService("{\"a\":1}", "web", "").ok());
  EXPECT_FALSE(ParseHealthService("[{", "web", "").ok());
}

// Checks as Consul lists them: the node's serfHealth, the service's own, and the critical
// maintenance checks that `consul maint -enable [-service <id>]` registers.
constexpr const char* kChecksBody = R"json([
  {"Node": {"Node": "n1", "Address": "10.0.0.1"},
   "Service": {"ID": "ok", "Port": 80, "CreateIndex": 1},
   "Checks": [{"CheckID": "serfHealth", "Status": "passing"},
              {"CheckID": "service:ok", "ServiceID": "ok", "Status": "passing"}]},
  {"Node": {"Node": "n2", "Address": "10.0.0.2"},
   "Service": {"ID": "svc-maint", "Port": 80, "CreateIndex": 2},
   "Checks": [{"CheckID": "serfHealth", "Status": "passing"},
              {"CheckID": "_service_maintenance:svc-maint", "ServiceID": "svc-maint",
               "Status": "critical", "Notes": "deploying"},
              {"CheckID": "service:svc-maint", "ServiceID": "svc-maint", "Status": "passing"}]},
  {"Node": {"Node": "n3", "Address": "10.0.0.3"},
   "Service": {"ID": "node-maint", "Port": 80, "CreateIndex": 3},
   "Checks": [{"CheckID": "serfHealth", "Status": "passing"},
              {"CheckID": "_node_maintenance", "Status": "critical"}]},
  {"Node": {"Node": "n4", "Address": "10.0.0.4"},
   "Service": {"ID": "failing", "Port": 80, "CreateIndex": 4},
   "Checks": [{"CheckID": "service:failing", "ServiceID": "failing", "Status": "critical"}]},
  {"Node": {"Node": "n5", "Address": "10.0.0.5"},
   "Service": {"ID": "maint-and-failing", "Port": 80, "CreateIndex": 5},
   "Checks": [{"CheckID": "_node_maintenance", "Status": "critical"},
              {"CheckID": "service:maint-and-failing", "Status": "warning"}]},
  {"Node": {"Node": "n6", "Address": "10.0.0.6"},
   "Service": {"ID": "other-maint", "Port": 80, "CreateIndex": 6},
   "Checks": [{"CheckID": "_service_maintenance:ok", "Status": "critical"}]},
  {"Node": {"Node": "n7", "Address": "not-an-ip"},
   "Service": {"ID": "failing-invalid", "Port": 80, "CreateIndex": 7},
   "Checks": [{"CheckID": "serfHealth", "Status": "critical"}]}
])json";

std::vector<std::pair<std::string, bool>> Drains(const HealthServiceAnswer& answer) {
  std::vector<std::pair<std::string, bool>> out;
  for (const auto& instance : answer.instances) {
    out.emplace_back(instance.target.name, instance.target.drain);
  }
  return out;
}

TEST(ParseHealthService, InstancesInMaintenanceDrainAndFailingOnesAreLeftOut) {
  auto answer = ParseHealthService(kChecksBody, "web", "", /*passing_only=*/true);
  ASSERT_TRUE(answer.ok()) << answer.error().message;
  // Another instance's maintenance check is just a critical check (n6): left out.
  EXPECT_EQ(Drains(*answer),
            (std::vector<std::pair<std::string, bool>>{
                {"n1/ok", false}, {"n2/svc-maint", true}, {"n3/node-maint", true}}));
  EXPECT_EQ(answer->not_passing, 4u);
  EXPECT_TRUE(answer->skipped.empty());  // not passing is not invalid, as with Consul's ?passing
}

TEST(ParseHealthService, WithoutPassingOnlyEveryInstanceIsATargetAndMaintenanceStillDrains) {
  auto answer = ParseHealthService(kChecksBody, "web", "", /*passing_only=*/false);
  ASSERT_TRUE(answer.ok()) << answer.error().message;
  EXPECT_EQ(Drains(*answer),
            (std::vector<std::pair<std::string, bool>>{{"n1/ok", false},
                                                       {"n2/svc-maint", true},
                                                       {"n3/node-maint", true},
                                                       {"n4/failing", false},
                                                       {"n5/maint-and-failing", true},
                                                       {"n6/other-maint", false}}));
  EXPECT_EQ(answer->not_passing, 0u);
  EXPECT_EQ(answer->skipped.size(), 1u);
}

TEST(ParseHealthService, AMaintenanceCheckThatPassesIsNoMaintenance) {
  constexpr const char* kBody = R"json([
    {"Node": {"Node": "n1", "Address": "10.0.0.1"}, "Service": {"ID": "a", "Port": 80},
     "Checks": [{"CheckID": "_node_maintenance", "Status": "passing"}]}])json";
  auto answer = ParseHealthService(kBody, "web", "", true);
  ASSERT_TRUE(answer.ok());
  EXPECT_EQ(Drains(*answer), (std::vector<std::pair<std::string, bool>>{{"n1/a", false}}));
}

TEST(SortOldestFirst, UnknownCreateIndexCountsAsNewest) {
  constexpr const char* kBody = R"json([
    {"Node": {"Node": "z", "Address": "10.0.0.3"}, "Service": {"ID": "s", "Port": 1}},
    {"Node": {"Node": "b", "Address": "10.0.0.2"}, "Service": {"ID": "s", "Port": 1,
     "CreateIndex": 9}},
    {"Node": {"Node": "a", "Address": "10.0.0.1"}, "Service": {"ID": "s", "Port": 1,
     "CreateIndex": 9}}
  ])json";
  auto answer = ParseHealthService(kBody, "web", "");
  ASSERT_TRUE(answer.ok());
  ASSERT_EQ(answer->instances.size(), 3u);
  EXPECT_EQ(answer->instances[0].node, "a");
  EXPECT_EQ(answer->instances[1].node, "b");
  EXPECT_EQ(answer->instances[2].node, "z");
}

}  // namespace
}  // namespace hsdo::consul
