// A DynamoDB agent's whole-table read, without the network: what its 60 s resync costs the
// agent's CPU once DynamoDB has answered. `BM_DynamoDbResync/N`: the agent holds the table
// (N slots, half of them filled, as bench/e2e.py's) at the stored generation and reads it
// whole again, as the resync does: the generation (GetItem), then the bracketed read
// (GetItem, Scan, GetItem). Every answer comes from memory in DynamoDB's own JSON, so the
// figure is the signing, the parsing and the decoding into slots.
#include <benchmark/benchmark.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "aws/dynamodb_store.h"
#include "aws/testing/fake_http_client.h"
#include "common/clock.h"
#include "store/seed_record.h"
#include "store/sqlite_store.h"

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

// An SQLite agent's heartbeat (every 2 x INTERVAL): one node report written into a store of
// N slots, on a file in /tmp (the page cache; no fsync in WAL mode with synchronous=NORMAL).
void BM_SqliteNodeReport(benchmark::State& state) {
  spdlog::set_level(spdlog::level::err);
  char dir_template[] = "/tmp/hsdo-bench-XXXXXX";
  const std::string dir = mkdtemp(dir_template);
  const std::string path = dir + "/hsdo.db";
  if (!SqliteStore::Open(path, static_cast<int>(state.range(0)), SqliteOpenMode::kCreate)) {
    state.SkipWithError("cannot make the store");
    return;
  }
  {
    SqliteNodeReports reports(path, SqliteNodeReports::Mode::kWriter);
    NodeReport report{.name = "haproxy-1",
                      .applied_generation = 7,
                      .interval = std::chrono::milliseconds(1000),
                      .instance = "0123456789abcdef",
                      .version = "1.0.0"};
    for (auto _ : state) {
      report.reported_at = std::chrono::system_clock::now();
      if (!reports.Report(report)) {
        state.SkipWithError("the report failed");
        break;
      }
      benchmark::DoNotOptimize(reports.OthersMayHaveWritten());
    }
  }
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_SqliteNodeReport)->Arg(100)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace hsdo::aws

BENCHMARK_MAIN();
