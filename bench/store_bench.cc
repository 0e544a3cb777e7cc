// A DynamoDB agent's whole-table read, without the network: what its 60 s resync costs the
// agent's CPU once DynamoDB has answered. `BM_DynamoDbResync/N`: the agent holds the table
// (N slots, half of them filled, as bench/e2e.py's) at the stored generation and reads it
// whole again, as the resync does: the generation (GetItem), then the bracketed read
// (GetItem, Scan, GetItem). Every answer comes from memory in DynamoDB's own JSON, so the
// figure is the signing, the parsing and the decoding into slots.
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "aws/dynamodb_store.h"
#include "aws/testing/fake_http_client.h"
#include "common/clock.h"
#include "store/seed_record.h"

namespace hsdo::aws {
namespace {

using nlohmann::json;

constexpr std::uint64_t kGeneration = 42;

Slot Filled(int id) {
  Slot slot{.id = id, .status = SlotStatus::kEnabled};
  slot.target = Target{.address = fmt::format("10.0.{}.{}", id / 250, id % 250),
                       .port = 8080,
                       .name = fmt::format("i-0{:016x}", 0xabc000 + id),
                       .group = "web-asg",
                       .az = "eu-west-1a"};
  slot.weight = 10;
  return slot;
}

// The Scan answer of a table of `size` slots, odd ones filled; record 1 holds the generation.
std::string ScanAnswer(int size) {
  json items = json::array();
  for (int id = 1; id <= size; ++id) {
    json item = RecordToItem(SlotToRecord(id % 2 == 1 ? Filled(id) : Slot::Free(id)));
    if (id == 1) item["TableGeneration"] = {{"N", std::to_string(kGeneration)}};
    items.push_back(std::move(item));
  }
  return json{{"Items", items}, {"Count", size}, {"ScannedCount", size}}.dump();
}

void BM_DynamoDbResync(benchmark::State& state) {
  spdlog::set_level(spdlog::level::err);
  const int size = static_cast<int>(state.range(0));
  const std::string scan = ScanAnswer(size);
  const std::string record_one =
      json{{"Item", json::parse(scan)["Items"][0]}}.dump();  // GetItem of record 1
  auto http = std::make_unique<testing::FakeHttpClient>([&](const http::Request& request) {
    const bool is_scan = testing::HeaderOf(request, "X-Amz-Target").ends_with(".Scan");
    return Result<http::Response>(testing::Reply(200, is_scan ? scan : record_one));
  });
  FakeClock clock;
  auto client = std::make_unique<AwsClient>(
      kDynamoDb, AwsClientOptions{.region = "eu-west-1", .endpoint = "http://127.0.0.1:9"},
      testing::FixedCredentials(clock), std::move(http), clock,
      RetryHooks{.sleep = [](std::chrono::milliseconds) {}, .random = [] { return 0.0; }});
  DynamoDbStore store(std::move(client), "hsdo-table", size);
  // The agent's first read: the table is held at kGeneration from then on.
  if (!store.ReadGeneration() || !store.ReadTable()) {
    state.SkipWithError("the first read failed");
    return;
  }
  for (auto _ : state) {
    auto generation = store.ReadGeneration();
    auto table = store.ReadTable();
    if (!generation || *generation != kGeneration || !table ||
        table->EnabledCount() != (size + 1) / 2) {
      state.SkipWithError("the resync did not read the table back");
      return;
    }
    benchmark::DoNotOptimize(table);
  }
  state.counters["scan_bytes"] = static_cast<double>(scan.size());
}
BENCHMARK(BM_DynamoDbResync)->Arg(100)->Arg(1000)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace hsdo::aws

BENCHMARK_MAIN();
