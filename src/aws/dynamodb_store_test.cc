#include "aws/dynamodb_store.h"

#include <gtest/gtest.h>

#include <prometheus/registry.h>

#include "aws/testing/fake_http_client.h"
#include "common/python_time.h"

namespace hsdo::aws {
namespace {

using nlohmann::json;
using testing::FakeHttpClient;
using testing::HeaderOf;
using testing::Reply;

Slot Active(int id, std::string ip, std::optional<std::uint16_t> port = std::nullopt) {
  Slot slot{.id = id, .status = SlotStatus::kEnabled};
  slot.target = Target{.address = std::move(ip),
                       .port = port,
                       .name = "i-0abc",
                       .group = "web-asg",
                       .az = "eu-west-1a"};
  slot.weight = 7;
  slot.last_weight_update = ParsePythonDatetime("2026-11-25 12:00:00.250000");
  return slot;
}

TEST(DynamoDbItems, FreeSlotIsTheSeedsFreeItemExactly) {
  const json item = SlotToItem(Slot::Free(4));
  EXPECT_EQ(item, json::parse(R"({
    "BackendServerID": {"N": "4"}, "IPAddress": {"S": "none"}, "ServerName": {"S": "none"},
    "ASG": {"S": "none"}, "Weight": {"N": "0"}, "BackendServerStatus": {"S": "disabled"},
    "LastWeightUpdate": {"S": "0-0-0 00:00:00.000000"}})"));
}

TEST(DynamoDbItems, ActiveSlotHasSeedAttributesPlusPortAndAz) {
  const json item = SlotToItem(Active(2, "10.0.1.5", 8080));
  EXPECT_EQ(item, json::parse(R"({
    "BackendServerID": {"N": "2"}, "IPAddress": {"S": "10.0.1.5"}, "ServerName": {"S": "i-0abc"},
    "ASG": {"S": "web-asg"}, "Weight": {"N": "7"}, "BackendServerStatus": {"S": "enabled"},
    "LastWeightUpdate": {"S": "2026-11-25 12:00:00.250000"}, "Port": {"N": "8080"},
    "AZ": {"S": "eu-west-1a"}})"));
  auto back = ItemToSlot(item, 2);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, Active(2, "10.0.1.5", 8080));
  // Without a port or AZ those attributes are absent, and the round trip still holds.
  Slot plain = Active(3, "10.0.1.6");
  plain.target.az.clear();
  EXPECT_FALSE(SlotToItem(plain).contains("Port"));
  EXPECT_FALSE(SlotToItem(plain).contains("AZ"));
  EXPECT_EQ(*ItemToSlot(SlotToItem(plain), 3), plain);
}

TEST(DynamoDbItems, ReadsAnItemTheOriginalServerWrote) {
  const json item = json::parse(R"({
    "BackendServerID": {"N": "1"}, "IPAddress": {"S": "172.31.5.9"}, "ServerName": {"S": "i-1"},
    "ASG": {"S": "front"}, "Weight": {"N": "10"}, "BackendServerStatus": {"S": "enabled"},
    "LastWeightUpdate": {"S": "2021-03-04 05:06:07"}})");
  auto slot = ItemToSlot(item, 1);
  ASSERT_TRUE(slot) << slot.error().message;
  EXPECT_EQ(slot->target.address, "172.31.5.9");
  EXPECT_EQ(slot->target.group, "front");
  EXPECT_FALSE(slot->target.port);
  EXPECT_TRUE(slot->last_weight_update);
}

TEST(DynamoDbItems, InvalidItemsAreRejected) {
  const json good = SlotToItem(Active(1, "10.0.0.1"));
  auto with = [&](const char* name, json value) {
    json item = good;
    item[name] = std::move(value);
    return ItemToSlot(item, 1);
  };
  EXPECT_FALSE(with("IPAddress", {{"S", "1.2.3.4; shutdown sessions server be/srv1"}}));
  EXPECT_FALSE(with("IPAddress", {{"S", "not-an-ip"}}));
  EXPECT_FALSE(with("IPAddress", {{"N", "5"}}));
  EXPECT_FALSE(with("Weight", {{"N", "abc"}}));
  EXPECT_FALSE(with("Weight", {{"N", "300"}}));
  EXPECT_FALSE(with("BackendServerStatus", {{"S", "maybe"}}));
  EXPECT_FALSE(with("Port", {{"N", "70000"}}));
  EXPECT_FALSE(with("ServerName", {{"S", "a b"}}));
  json no_status = good;
  no_status.erase("BackendServerStatus");
  EXPECT_FALSE(ItemToSlot(no_status, 1));
  // A disabled item is a free slot whatever else it holds.
  EXPECT_EQ(*with("BackendServerStatus", {{"S", "disabled"}}), Slot::Free(1));
}

// A scripted DynamoDB: answers by X-Amz-Target from a handler per operation.
struct FakeDynamo {
  std::map<std::string, std::function<Result<http::Response>(const json&)>> handlers;
  std::vector<std::pair<std::string, json>> calls;

  std::unique_ptr<DynamoDbStore> MakeStore(int list_size,
                                           prometheus::Registry* registry = nullptr) {
    auto http = std::make_unique<FakeHttpClient>([this](const http::Request& request) {
      const std::string target = HeaderOf(request, "X-Amz-Target");
      const std::string op = target.substr(target.find('.') + 1);
      const json body = json::parse(request.body);
      calls.emplace_back(op, body);
      auto it = handlers.find(op);
      if (it == handlers.end()) return Result<http::Response>(Reply(500, "{}"));
      return it->second(body);
    });
    AwsConfig config;
    config.access_key_id = "AKID";
    config.secret_access_key = "SECRET";
    std::vector<std::unique_ptr<CredentialsProvider>> providers;
    providers.push_back(MakeEnvironmentProvider(config));
    auto client = std::make_unique<AwsClient>(
        kDynamoDb, AwsClientOptions{.region = "eu-west-1", .endpoint = "http://127.0.0.1:9"},
        std::make_shared<CredentialsChain>(std::move(providers), clock), std::move(http), clock,
        RetryHooks{.sleep = [](std::chrono::milliseconds) {}, .random = [] { return 0.0; }});
    return std::make_unique<DynamoDbStore>(std::move(client), "hsdo-table", list_size, registry);
  }
  std::vector<json> CallsOf(const std::string& op) const {
    std::vector<json> out;
    for (const auto& [name, body] : calls) {
      if (name == op) out.push_back(body);
    }
    return out;
  }
  FakeClock clock;
};

TEST(DynamoDbStore, ReadGenerationIsOneSmallEventuallyConsistentGetItem) {
  FakeDynamo dynamo;
  dynamo.handlers["GetItem"] = [](const json&) {
    return Result<http::Response>(
        Reply(200, R"({"Item":{"BackendServerID":{"N":"1"},"TableGeneration":{"N":"42"}}})"));
  };
  auto store = dynamo.MakeStore(10);
  EXPECT_EQ(*store->ReadGeneration(), 42u);
  const auto calls = dynamo.CallsOf("GetItem");
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0]["ProjectionExpression"], "TableGeneration");
  EXPECT_EQ(calls[0]["ConsistentRead"], false);
  EXPECT_EQ(calls[0]["Key"], json::parse(R"({"BackendServerID":{"N":"1"}})"));
}

TEST(DynamoDbStore, SeedTableWithoutGenerationReadsAsZero) {
  FakeDynamo dynamo;
  dynamo.handlers["GetItem"] = [](const json&) {
    return Result<http::Response>(Reply(200, R"({"Item":{"BackendServerID":{"N":"1"}}})"));
  };
  EXPECT_EQ(*dynamo.MakeStore(10)->ReadGeneration(), 0u);
  dynamo.handlers["GetItem"] = [](const json&) { return Result<http::Response>(Reply(200, "{}")); };
  EXPECT_EQ(*dynamo.MakeStore(10)->ReadGeneration(), 0u);
}

TEST(DynamoDbStore, ReadTablePaginatesValidatesAndCounts) {
  FakeDynamo dynamo;
  dynamo.handlers["GetItem"] = [](const json&) {
    return Result<http::Response>(Reply(200, R"({"Item":{"TableGeneration":{"N":"3"}}})"));
  };
  json slot1 = SlotToItem(Active(1, "10.0.0.1", 81));
  slot1["TableGeneration"] = {{"N", "3"}};
  slot1["Overflow"] = {{"N", "2"}};
  json bad = SlotToItem(Active(2, "10.0.0.2"));
  bad["IPAddress"] = {{"S", "1.2.3.4; shutdown sessions server be/srv1"}};
  const json page1{{"Items", {slot1, bad}},
                   {"LastEvaluatedKey", {{"BackendServerID", {{"N", "2"}}}}}};
  const json page2{
      {"Items", {SlotToItem(Active(4, "10.0.0.4")), SlotToItem(Active(11, "10.0.0.11"))}}};
  dynamo.handlers["Scan"] = [&](const json& body) {
    return Result<http::Response>(
        Reply(200, body.contains("ExclusiveStartKey") ? page2.dump() : page1.dump()));
  };
  prometheus::Registry registry;
  auto store = dynamo.MakeStore(5, &registry);
  auto table = store->ReadTable();
  ASSERT_TRUE(table) << table.error().message;
  EXPECT_EQ(table->generation, 3u);
  EXPECT_EQ(table->overflow, 2);
  ASSERT_EQ(table->slots.size(), 5u);
  EXPECT_EQ(table->slots[0], Active(1, "10.0.0.1", 81));
  EXPECT_EQ(table->slots[1], Slot::Free(2));  // the injection attempt is never trusted
  EXPECT_EQ(table->slots[2], Slot::Free(3));  // never written
  EXPECT_EQ(table->slots[3], Active(4, "10.0.0.4"));
  EXPECT_EQ(store->invalid_items(), 1u);
  const auto scans = dynamo.CallsOf("Scan");
  ASSERT_EQ(scans.size(), 2u);
  EXPECT_EQ(scans[0]["ConsistentRead"], true);
  EXPECT_EQ(scans[1]["ExclusiveStartKey"], json::parse(R"({"BackendServerID":{"N":"2"}})"));
}

TEST(DynamoDbStore, ReadTableScansAgainWhenAWriteRacedIt) {
  FakeDynamo dynamo;
  int gets = 0;
  dynamo.handlers["GetItem"] = [&](const json&) {
    // before=1, after=2 (a write landed), then stable at 2.
    const int generation = ++gets == 1 ? 1 : 2;
    return Result<http::Response>(Reply(
        200, json{{"Item", {{"TableGeneration", {{"N", std::to_string(generation)}}}}}}.dump()));
  };
  dynamo.handlers["Scan"] = [&](const json&) {
    json slot1 = SlotToItem(Slot::Free(1));
    slot1["TableGeneration"] = {{"N", gets == 1 ? "1" : "2"}};
    return Result<http::Response>(Reply(200, json{{"Items", {slot1}}}.dump()));
  };
  auto table = dynamo.MakeStore(3)->ReadTable();
  ASSERT_TRUE(table) << table.error().message;
  EXPECT_EQ(table->generation, 2u);
  EXPECT_EQ(dynamo.CallsOf("Scan").size(), 2u);
}

TEST(DynamoDbStore, WriteWithoutSlotOneUpdatesItsGenerationUnderACondition) {
  FakeDynamo dynamo;
  dynamo.handlers["TransactWriteItems"] = [](const json&) {
    return Result<http::Response>(Reply(200, "{}"));
  };
  auto store = dynamo.MakeStore(10);
  const std::vector<Slot> changed = {Active(3, "10.0.0.3"), Slot::Free(5)};
  auto generation = store->WriteSlots(changed, 1, 0);
  ASSERT_TRUE(generation) << generation.error().message;
  EXPECT_EQ(*generation, 1u);
  const auto tx = dynamo.CallsOf("TransactWriteItems").at(0);
  ASSERT_EQ(tx["TransactItems"].size(), 3u);
  EXPECT_EQ(tx["TransactItems"][0]["Put"]["Item"], SlotToItem(changed[0]));
  EXPECT_EQ(tx["TransactItems"][1]["Put"]["Item"], SlotToItem(changed[1]));
  const json& update = tx["TransactItems"][2]["Update"];
  EXPECT_EQ(update["Key"], json::parse(R"({"BackendServerID":{"N":"1"}})"));
  EXPECT_EQ(update["ConditionExpression"],
            "attribute_not_exists(TableGeneration) OR TableGeneration = :expected");
  EXPECT_EQ(update["ExpressionAttributeValues"][":next"], json::parse(R"({"N":"1"})"));
  EXPECT_EQ(update["ExpressionAttributeValues"][":overflow"], json::parse(R"({"N":"1"})"));
  EXPECT_EQ(tx["ClientRequestToken"].get<std::string>().size(), 36u);
}

TEST(DynamoDbStore, WriteOfSlotOneFoldsTheGenerationIntoItsPut) {
  FakeDynamo dynamo;
  dynamo.handlers["TransactWriteItems"] = [](const json&) {
    return Result<http::Response>(Reply(200, "{}"));
  };
  auto store = dynamo.MakeStore(10);
  const std::vector<Slot> changed = {Active(1, "10.0.0.1")};
  EXPECT_EQ(*store->WriteSlots(changed, 0, 7), 8u);
  const auto tx = dynamo.CallsOf("TransactWriteItems").at(0);
  ASSERT_EQ(tx["TransactItems"].size(), 1u);
  const json& put = tx["TransactItems"][0]["Put"];
  EXPECT_EQ(put["Item"]["TableGeneration"], json::parse(R"({"N":"8"})"));
  EXPECT_EQ(put["Item"]["Overflow"], json::parse(R"({"N":"0"})"));
  EXPECT_EQ(put["ConditionExpression"], "TableGeneration = :expected");
  EXPECT_EQ(put["ExpressionAttributeValues"][":expected"], json::parse(R"({"N":"7"})"));
}

TEST(DynamoDbStore, LostConditionIsAConflictOtherCancellationsAreUnavailable) {
  FakeDynamo dynamo;
  std::string reason = "ConditionalCheckFailed";
  dynamo.handlers["TransactWriteItems"] = [&](const json&) {
    return Result<http::Response>(
        Reply(400, json{{"__type", "com.amazonaws.dynamodb.v20120810#TransactionCanceledException"},
                        {"message", "Transaction cancelled"},
                        {"CancellationReasons", {{{"Code", "None"}}, {{"Code", reason}}}}}
                       .dump()));
  };
  auto store = dynamo.MakeStore(10);
  const std::vector<Slot> changed = {Active(3, "10.0.0.3")};
  auto result = store->WriteSlots(changed, 0, 4);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, ErrorCode::kConflict);
  reason = "TransactionConflict";
  result = store->WriteSlots(changed, 0, 4);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, ErrorCode::kUnavailable);
}

TEST(DynamoDbStore, MoreThan99ChangesAreChainedTransactionsFreesFirst) {
  FakeDynamo dynamo;
  dynamo.handlers["TransactWriteItems"] = [](const json&) {
    return Result<http::Response>(Reply(200, "{}"));
  };
  auto store = dynamo.MakeStore(200);
  std::vector<Slot> changed;
  for (int id = 2; id <= 151; ++id) {
    changed.push_back(id % 10 == 0 ? Slot::Free(id)
                                   : Active(id, fmt::format("10.0.{}.{}", id / 200, id % 200)));
  }
  auto generation = store->WriteSlots(changed, 0, 10);
  ASSERT_TRUE(generation) << generation.error().message;
  EXPECT_EQ(*generation, 12u);
  const auto txs = dynamo.CallsOf("TransactWriteItems");
  ASSERT_EQ(txs.size(), 2u);
  EXPECT_EQ(txs[0]["TransactItems"].size(), 100u);
  EXPECT_EQ(txs[1]["TransactItems"].size(), 52u);
  // The 15 frees lead the first transaction.
  EXPECT_EQ(txs[0]["TransactItems"][0]["Put"]["Item"]["BackendServerStatus"]["S"], "disabled");
  EXPECT_EQ(txs[0]["TransactItems"][14]["Put"]["Item"]["BackendServerStatus"]["S"], "disabled");
  EXPECT_EQ(txs[0]["TransactItems"][15]["Put"]["Item"]["BackendServerStatus"]["S"], "enabled");
  EXPECT_EQ(txs[0]["TransactItems"][99]["Update"]["ExpressionAttributeValues"][":expected"]["N"],
            "10");
  EXPECT_EQ(txs[1]["TransactItems"][51]["Update"]["ExpressionAttributeValues"][":expected"]["N"],
            "11");
}

TEST(DynamoDbStore, MissingTableIsAClearErrorNamingIt) {
  FakeDynamo dynamo;
  dynamo.handlers["GetItem"] = [](const json&) {
    return Result<http::Response>(Reply(
        400,
        R"({"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not found"})"));
  };
  auto result = dynamo.MakeStore(10)->ReadGeneration();
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, ErrorCode::kNotFound);
  EXPECT_NE(result.error().message.find("DynamoDB table 'hsdo-table' not found"),
            std::string::npos);
}

TEST(DynamoDbStore, InitTableCreatesAsTheSeedAndWaitsForActive) {
  FakeDynamo dynamo;
  int describes = 0;
  dynamo.handlers["CreateTable"] = [](const json&) {
    return Result<http::Response>(Reply(200, R"({"TableDescription":{"TableStatus":"CREATING"}})"));
  };
  dynamo.handlers["DescribeTable"] = [&](const json&) {
    return Result<http::Response>(Reply(200, ++describes < 3
                                                 ? R"({"Table":{"TableStatus":"CREATING"}})"
                                                 : R"({"Table":{"TableStatus":"ACTIVE"}})"));
  };
  AwsConfig config;
  config.access_key_id = "AKID";
  config.secret_access_key = "SECRET";
  std::vector<std::unique_ptr<CredentialsProvider>> providers;
  providers.push_back(MakeEnvironmentProvider(config));
  auto http = std::make_unique<FakeHttpClient>([&](const http::Request& request) {
    const std::string target = HeaderOf(request, "X-Amz-Target");
    const std::string op = target.substr(target.find('.') + 1);
    dynamo.calls.emplace_back(op, json::parse(request.body));
    return dynamo.handlers[op](json::parse(request.body));
  });
  AwsClient client(kDynamoDb, {.region = "eu-west-1", .endpoint = "http://127.0.0.1:9"},
                   std::make_shared<CredentialsChain>(std::move(providers), dynamo.clock),
                   std::move(http), dynamo.clock);
  int sleeps = 0;
  ASSERT_TRUE(InitTable(client, "hsdo-table", std::chrono::seconds(10),
                        [&](std::chrono::milliseconds) { ++sleeps; }));
  EXPECT_EQ(sleeps, 2);
  const json create = dynamo.CallsOf("CreateTable").at(0);
  EXPECT_EQ(create, json::parse(R"({"TableName":"hsdo-table",
    "AttributeDefinitions":[{"AttributeName":"BackendServerID","AttributeType":"N"}],
    "KeySchema":[{"AttributeName":"BackendServerID","KeyType":"HASH"}],
    "BillingMode":"PROVISIONED",
    "ProvisionedThroughput":{"ReadCapacityUnits":20,"WriteCapacityUnits":20}})"));

  // An existing table is fine; a table that never becomes ACTIVE is a bounded wait.
  dynamo.handlers["CreateTable"] = [](const json&) {
    return Result<http::Response>(Reply(
        400,
        R"({"__type":"com.amazonaws.dynamodb.v20120810#ResourceInUseException","message":"Table already exists"})"));
  };
  dynamo.handlers["DescribeTable"] = [](const json&) {
    return Result<http::Response>(Reply(200, R"({"Table":{"TableStatus":"CREATING"}})"));
  };
  auto result =
      InitTable(client, "hsdo-table", std::chrono::seconds(3), [](std::chrono::milliseconds) {});
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message.find("not ACTIVE"), std::string::npos);
}

}  // namespace
}  // namespace hsdo::aws
