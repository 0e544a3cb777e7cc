#include "etcd/etcd_backend.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "common/testing/log_capture.h"
#include "etcd/testing/etcd_process.h"
#include "store/seed_record.h"
#include "store/slot_table_store.h"

namespace hsdo::etcd {
namespace {

using namespace std::chrono_literals;

Record SeedRecord(int id, const std::string& address) {
  return Record{{"BackendServerID", AttributeValue::Number(id)},
                {"IPAddress", AttributeValue::String(address)},
                {"ServerName", AttributeValue::String("web-" + std::to_string(id))},
                {"ASG", AttributeValue::String("asg-a")},
                {"Weight", AttributeValue::Number(10)},
                {"BackendServerStatus", AttributeValue::String("enabled")},
                {"LastWeightUpdate", AttributeValue::String("2026-01-01 00:00:00.000000")},
                {"Port", AttributeValue::Number(8080)},
                {"AZ", AttributeValue::String("az-1")}};
}

Record FreeRecord1() {
  return Record{{"BackendServerID", AttributeValue::Number(1)},
                {"IPAddress", AttributeValue::String("none")},
                {"BackendServerStatus", AttributeValue::String("disabled")}};
}

TEST(RecordJson, KeepsStringsAndNumbersApart) {
  const Record record = SeedRecord(7, "10.0.0.7");
  const std::string text = RecordToJson(record);
  EXPECT_NE(text.find(R"("Weight":10)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("IPAddress":"10.0.0.7")"), std::string::npos) << text;
  auto back = JsonToRecord(text);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, record);
}

TEST(RecordJson, AnythingElseIsOtherForTheCodecToRefuse) {
  auto record = JsonToRecord(R"({"Weight": 1.5, "IPAddress": null, "ASG": ["a"], "Port": 80})");
  ASSERT_TRUE(record);
  EXPECT_EQ(record->at("Weight").type, AttributeValue::Type::kOther);
  EXPECT_EQ(record->at("IPAddress").type, AttributeValue::Type::kOther);
  EXPECT_EQ(record->at("ASG").type, AttributeValue::Type::kOther);
  EXPECT_EQ(record->at("Port"), AttributeValue::Number(80));
  EXPECT_FALSE(JsonToRecord("[1]"));
  EXPECT_FALSE(JsonToRecord("{"));
}

TEST(MakeClientOptions, ValidatesTheConfig) {
  EXPECT_FALSE(MakeClientOptions(EtcdConfig{}));
  EtcdConfig config{.endpoints = {"http://127.0.0.1:2379"}, .prefix = "/hsdo/x/"};
  EXPECT_TRUE(MakeClientOptions(config));
  config.prefix = "/";
  EXPECT_FALSE(MakeClientOptions(config));
  config.prefix = "/hsdo/\nx";
  EXPECT_FALSE(MakeClientOptions(config));
  config.prefix = "/hsdo/x";
  config.cert = "/nonexistent/cert.pem";
  EXPECT_FALSE(MakeClientOptions(config));  // no key, no file
  config.cert.clear();
  config.ca_cert = "/etc/hostname";
  EXPECT_FALSE(MakeClientOptions(config));  // CA over http://
  config.endpoints = {"https://127.0.0.1:2379"};
  auto options = MakeClientOptions(config);
  ASSERT_TRUE(options) << options.error().message;
  EXPECT_EQ(options->tls.ca_file, "/etc/hostname");
  config.password = "x";
  EXPECT_FALSE(MakeClientOptions(config));  // a password without a user
}

// Sends every request, but loses the answer of the first txn (as if the connection broke
// after etcd applied it): the client then tries the next endpoint.
ConditionalWrite WriteOf(std::vector<Record> puts, std::uint64_t expected) {
  return ConditionalWrite{.puts = std::move(puts),
                          .expected_generation = expected,
                          .next_generation = expected + 1,
                          .overflow = 0,
                          .free_record_1 = FreeRecord1()};
}

class LosingHttp final : public http::HttpClient {
 public:
  explicit LosingHttp(std::atomic<int>* txns_to_lose) : lose_(txns_to_lose) {}
  Result<http::Response> Send(const http::Request& request) override {
    auto response = real_->Send(request);
    if (request.url.ends_with("/v3/kv/txn") && lose_->fetch_sub(1) > 0) {
      return MakeError(ErrorCode::kUnavailable, "answer lost (test)");
    }
    return response;
  }

 private:
  std::atomic<int>* lose_;
  std::unique_ptr<http::HttpClient> real_ = http::MakeCurlHttpClient();
};

// Counts the requests whose URL ends with `path`.
class CountingHttp final : public http::HttpClient {
 public:
  CountingHttp(std::atomic<int>* count, std::string path) : count_(count), path_(std::move(path)) {}
  Result<http::Response> Send(const http::Request& request) override {
    if (request.url.ends_with(path_)) ++*count_;
    return real_->Send(request);
  }

 private:
  std::atomic<int>* count_;
  std::string path_;
  std::unique_ptr<http::HttpClient> real_ = http::MakeCurlHttpClient();
};

// Answers every watch as etcd answers one on a key the user may not read: created and
// canceled in one message. The rest goes to etcd.
class RefusedWatchHttp final : public http::HttpClient {
 public:
  explicit RefusedWatchHttp(std::atomic<int>* watches) : watches_(watches) {}
  Result<http::Response> Send(const http::Request& request) override {
    if (!request.url.ends_with("/v3/watch")) return real_->Send(request);
    ++*watches_;
    if (request.on_body) {
      (void)request.on_body(
          R"({"result":{"header":{"revision":"9"},"created":true,"canceled":true,)"
          R"("cancel_reason":"etcdserver: permission denied"}})"
          "\n");
    }
    return http::Response{.status = 200};
  }

 private:
  std::atomic<int>* watches_;
  std::unique_ptr<http::HttpClient> real_ = http::MakeCurlHttpClient();
};

class EtcdBackendTest : public testing::EtcdSuite {
 protected:
  // Each test its own prefix.
  // `watch_timeout`: when each watch stream ends by design (5 minutes by default).
  std::unique_ptr<EtcdBackend> Backend(HttpFactory factory = nullptr,
                                       std::vector<std::string> endpoints = {},
                                       std::chrono::milliseconds watch_timeout = 300s) {
    if (endpoints.empty()) endpoints = {etcd().endpoint()};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    return std::make_unique<EtcdBackend>(
        std::make_unique<EtcdClient>(ClientOptions{.endpoints = std::move(endpoints),
                                                   .request_timeout = 2s,
                                                   .watch_timeout = watch_timeout},
                                     std::move(factory)),
        std::string("/test/") + info->name());
  }
  // Waits (5 s at most) until `calls` reaches `n`; what it reached.
  static int WaitForCalls(const std::atomic<int>& calls, int n) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (calls.load() < n && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(2ms);
    }
    return calls.load();
  }
};

TEST_F(EtcdBackendTest, NewTableHasNoRecords) {
  auto backend = Backend();
  auto all = backend->ReadAll();
  ASSERT_TRUE(all) << all.error().message;
  EXPECT_TRUE(all->empty());
  auto record_1 = backend->Get(1, {"TableGeneration"}, true);
  ASSERT_TRUE(record_1);
  EXPECT_FALSE(record_1->has_value());
}

// A prefix that neither `hsdo init-table` nor an orchestrator ever wrote (a mistyped
// ETCD_PREFIX) is not initialised; a node record under it does not make it so.
TEST_F(EtcdBackendTest, APrefixIsInitialisedByInitTableOrByAGenerationWritten) {
  auto backend = Backend();
  auto fresh = backend->Initialised();
  ASSERT_TRUE(fresh) << fresh.error().message;
  EXPECT_FALSE(*fresh);
  EtcdClient client(ClientOptions{.endpoints = {etcd().endpoint()}});
  const std::string prefix =
      std::string("/test/") + ::testing::UnitTest::GetInstance()->current_test_info()->name();
  TxnRequest node;
  node.success.push_back(Put{.key = prefix + "/nodes/web-1", .value = "{}"});
  ASSERT_TRUE(client.Txn(node));
  EXPECT_FALSE(*backend->Initialised());

  ASSERT_TRUE(backend->Initialise());
  ASSERT_TRUE(backend->Initialise());  // idempotent
  EXPECT_TRUE(*backend->Initialised());
  auto all = backend->ReadAll();  // the marker is no slot
  ASSERT_TRUE(all) << all.error().message;
  EXPECT_TRUE(all->empty());

  // A store an older hsdo's orchestrator wrote has a generation key and no marker.
  auto older = std::make_unique<EtcdBackend>(
      std::make_unique<EtcdClient>(ClientOptions{.endpoints = {etcd().endpoint()}}),
      prefix + "-older");
  ASSERT_TRUE(older->Write(WriteOf({SeedRecord(2, "10.0.0.2")}, 0)));
  EXPECT_TRUE(*older->Initialised());
  // And one whose orchestrator led without ever writing a table (no targets yet).
  auto led = std::make_unique<EtcdBackend>(
      std::make_unique<EtcdClient>(ClientOptions{.endpoints = {etcd().endpoint()}}),
      prefix + "-led");
  ASSERT_TRUE(led->WriteLease(Lease{.holder = "a/1", .epoch = 1, .version = 7}, std::nullopt));
  EXPECT_TRUE(*led->Initialised());
}

TEST_F(EtcdBackendTest, WritesReadBackWithTheMetadataOnRecord1) {
  auto backend = Backend();
  ASSERT_TRUE(backend->Write(WriteOf({SeedRecord(2, "10.0.0.2")}, 0)));
  auto all = backend->ReadAll();
  ASSERT_TRUE(all) << all.error().message;
  ASSERT_EQ(all->size(), 2u);  // record 1 created free
  std::map<std::string, Record> by_id;
  for (const auto& record : *all) by_id[record.at("BackendServerID").text] = record;
  EXPECT_EQ(by_id["2"], SeedRecord(2, "10.0.0.2"));
  EXPECT_EQ(by_id["1"].at("BackendServerStatus").text, "disabled");
  EXPECT_EQ(by_id["1"].at("TableGeneration"), AttributeValue::Number(1));
  EXPECT_EQ(by_id["1"].at("Overflow"), AttributeValue::Number(0));

  auto generation = backend->Get(1, {"TableGeneration"}, false);
  ASSERT_TRUE(generation && generation->has_value());
  EXPECT_EQ(**generation, (Record{{"TableGeneration", AttributeValue::Number(1)}}));
  auto slot = backend->Get(2, {"IPAddress", "Weight"}, true);
  ASSERT_TRUE(slot && slot->has_value());
  EXPECT_EQ(slot->value().size(), 2u);
  EXPECT_EQ(slot->value().at("IPAddress").text, "10.0.0.2");
}

TEST_F(EtcdBackendTest, StaleGenerationIsAConflictAndChangesNothing) {
  auto writer = Backend();
  auto other = Backend();
  ASSERT_TRUE(writer->Write(WriteOf({SeedRecord(1, "10.0.0.1")}, 0)));
  // `other` read generation 1, then `writer` wrote generation 2.
  ASSERT_TRUE(other->ReadAll());
  ASSERT_TRUE(writer->Write(WriteOf({SeedRecord(2, "10.0.0.2")}, 1)));
  auto stale = other->Write(WriteOf({SeedRecord(3, "10.0.0.3")}, 1));
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, ErrorCode::kConflict);
  auto unknown = other->Write(WriteOf({SeedRecord(3, "10.0.0.3")}, 7));
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, ErrorCode::kConflict);
  auto all = writer->ReadAll();
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 2u);
  // ... and `other` can write on top of what it now knows.
  EXPECT_TRUE(other->Write(WriteOf({SeedRecord(3, "10.0.0.3")}, 2)));
}

TEST_F(EtcdBackendTest, ALostAnswerIsRecognisedNotReportedAsAConflict) {
  std::atomic<int> lose{1};
  auto backend =
      Backend([&lose](const http::TlsOptions&) { return std::make_unique<LosingHttp>(&lose); },
              {etcd().endpoint(), etcd().endpoint()});
  auto write = backend->Write(WriteOf({SeedRecord(1, "10.0.0.1")}, 0));
  EXPECT_EQ(lose.load(), -1);  // the answer was lost once, and the txn sent again
  ASSERT_TRUE(write) << write.error().message;
  auto generation = Backend()->Get(1, {"TableGeneration"}, true);
  ASSERT_TRUE(generation && generation->has_value());
  EXPECT_EQ(generation->value().at("TableGeneration"), AttributeValue::Number(1));
}

// The largest write: a full chunk on a new table without record 1, which the same txn then
// creates (a nested txn, which etcd counts as two operations).
TEST_F(EtcdBackendTest, AFullChunkFitsInOneTxn) {
  auto backend = Backend();
  std::vector<Record> puts;
  for (int id = 2; id <= static_cast<int>(kMaxRecordsPerTxn) + 1; ++id) {
    puts.push_back(SeedRecord(id, "10.0.1." + std::to_string(id)));
  }
  auto full = backend->Write(WriteOf(puts, 0));
  ASSERT_TRUE(full) << full.error().message;
  auto all = backend->ReadAll();
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), kMaxRecordsPerTxn + 1);  // and record 1
  puts.push_back(SeedRecord(200, "10.0.2.1"));
  auto too_many = backend->Write(WriteOf(puts, 1));
  ASSERT_FALSE(too_many);
  EXPECT_EQ(too_many.error().code, ErrorCode::kInvalidArgument);
}

TEST_F(EtcdBackendTest, WatchWakesOnEveryWriteAndStopsPromptly) {
  auto writer = Backend();
  auto watcher = Backend();
  std::atomic<int> calls{0};
  ASSERT_TRUE(watcher->Watch([&calls] { ++calls; }));
  const auto wait_for = [&](int n) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (calls.load() < n && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(2ms);
    }
    return calls.load() >= n;
  };
  ASSERT_TRUE(wait_for(1));  // once when the watch starts
  std::uint64_t generation = 0;
  for (int i = 0; i < 3; ++i) {
    const int before = calls.load();
    ASSERT_TRUE(writer->Write(WriteOf({SeedRecord(2, "10.0.0." + std::to_string(i))}, generation)));
    ++generation;
    EXPECT_TRUE(wait_for(before + 1)) << "write " << i;
  }
  const auto stopping = std::chrono::steady_clock::now();
  watcher.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - stopping, 2500ms);
}

// Every stream ends at watch_timeout (5 minutes by default) by design: that end is no lost
// watch (it was counted and logged as one, woke the agent, and moved every request to the next
// member), and the next stream goes on from the last revision, missing no write.
TEST_F(EtcdBackendTest, AStreamEndedAtItsTimeoutIsWatchedOnNotLost) {
  auto writer = Backend();
  auto watcher = Backend(nullptr, {}, 700ms);
  hsdo::testing::LogCapture log;
  std::atomic<int> calls{0};
  ASSERT_TRUE(watcher->Watch([&calls] { ++calls; }));
  std::this_thread::sleep_for(2500ms);  // three streams or more
  EXPECT_EQ(calls.load(), 1);           // once when the watch starts
  EXPECT_EQ(watcher->watch_restarts(), 0u);
  EXPECT_EQ(log.Count("watch lost"), 0) << log.text();
  ASSERT_TRUE(writer->Write(WriteOf({SeedRecord(2, "10.0.0.2")}, 0)));
  EXPECT_EQ(WaitForCalls(calls, 2), 2);
}

// Review of 28e97e3: a watch created and canceled in one answer (a key the user may not read)
// was said "watching again", its backoff started again, and it was retried ten times a second.
TEST_F(EtcdBackendTest, AWatchRefusedAsItIsMadeIsRetriedWithItsBackoff) {
  std::atomic<int> watches{0};
  auto watcher = Backend([&watches](const http::TlsOptions&) -> std::unique_ptr<http::HttpClient> {
    return std::make_unique<RefusedWatchHttp>(&watches);
  });
  hsdo::testing::LogCapture log;
  ASSERT_TRUE(watcher->Watch([] {}));
  std::this_thread::sleep_for(1600ms);  // backoff 100, 200, 400, 800 ms: five attempts at most
  watcher.reset();
  EXPECT_LE(watches.load(), 6) << log.text();
  EXPECT_EQ(log.Count("store: watching again"), 0) << log.text();
}

// The leader compacts every ETCD_COMPACTION_INTERVAL: a table unchanged that long leaves a
// watch whose next stream (after its planned end) starts from a compacted revision. That is
// no lost watch (it was counted and logged as one on every agent every five minutes); the
// agent still reads the table again, since a write may have come between the two streams.
TEST_F(EtcdBackendTest, AStreamCompactedAfterItsPlannedEndIsNoLostWatch) {
  auto leader = Backend();
  auto watcher = Backend(nullptr, {}, 700ms);
  hsdo::testing::LogCapture log;
  std::atomic<int> calls{0};
  ASSERT_TRUE(watcher->Watch([&calls] { ++calls; }));
  ASSERT_EQ(WaitForCalls(calls, 1), 1);
  // Past the first stream's planned end: the second is open, and a compaction does not end it
  // (before its start, it would be a compaction found without a planned end, counted).
  std::this_thread::sleep_for(900ms);
  ASSERT_TRUE(leader->WriteLease({.holder = "a", .epoch = 1, .version = 1}, std::nullopt));
  ASSERT_TRUE(leader->WriteLease({.holder = "a", .epoch = 1, .version = 2}, 1));
  EtcdClient client(ClientOptions{.endpoints = {etcd().endpoint()}, .request_timeout = 2s});
  const auto now = client.Range(leader->lease_key());
  ASSERT_TRUE(now) << now.error().message;
  ASSERT_TRUE(client.Compact(now->revision));
  EXPECT_EQ(WaitForCalls(calls, 2), 2);  // read again after the next stream found it compacted
  EXPECT_EQ(watcher->watch_restarts(), 0u);
  EXPECT_EQ(log.Count("was compacted"), 0) << log.text();
  EXPECT_EQ(log.Count("watch lost"), 0) << log.text();
}

TEST_F(EtcdBackendTest, LeaseIsWrittenOnlyOverTheVersionItExpects) {
  auto a = Backend();
  auto b = Backend();
  auto none = a->ReadLease();
  ASSERT_TRUE(none) << none.error().message;
  EXPECT_FALSE(none->has_value());
  const Lease first{.holder = "a",
                    .epoch = 1,
                    .version = 11,
                    .duration_ms = 10'000,
                    .since_unix_ms = 1'700'000'000'000,
                    .renewed_unix_ms = 1'700'000'003'000};
  ASSERT_TRUE(a->WriteLease(first, std::nullopt));
  auto taken = b->WriteLease({.holder = "b", .epoch = 1, .version = 12}, std::nullopt);
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error().code, ErrorCode::kConflict);
  auto read = b->ReadLease();
  ASSERT_TRUE(read && read->has_value());
  EXPECT_EQ(**read, first);

  const Lease renewed{.holder = "a", .epoch = 1, .version = 13, .duration_ms = 10'000};
  ASSERT_TRUE(a->WriteLease(renewed, 11));
  // b observed version 11, which is no longer there.
  auto stale = b->WriteLease({.holder = "b", .epoch = 2, .version = 14}, 11);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, ErrorCode::kConflict);
  EXPECT_TRUE(b->WriteLease({.holder = "b", .epoch = 2, .version = 15}, 13));
}

// etcd keeps every revision until compacted (its default), and every node report and lease
// renewal is one: the leader compacts, at its lease writes, up to the revision it saw one
// ETCD_COMPACTION_INTERVAL before (what a watch started since needs stays).
TEST_F(EtcdBackendTest, TheLeaderCompactsTheHistoryUpToTheRevisionOfOneIntervalBefore) {
  EtcdClient client(ClientOptions{.endpoints = {etcd().endpoint()},
                                  .request_timeout = 2s,
                                  .watch_timeout = 1s});  // a watch not cancelled ends then
  auto leader = Backend();
  const auto watch_from = [&](std::int64_t revision) {
    return client.Watch(leader->lease_key(), "", revision, [](std::int64_t) {}, {});
  };
  const auto before = client.Range(leader->lease_key());
  ASSERT_TRUE(before) << before.error().message;
  leader->SetCompaction(20ms);
  ASSERT_TRUE(leader->WriteLease({.holder = "a", .epoch = 1, .version = 1}, std::nullopt));
  std::this_thread::sleep_for(30ms);
  ASSERT_TRUE(leader->WriteLease({.holder = "a", .epoch = 1, .version = 2}, 1));
  auto old = watch_from(before->revision);
  ASSERT_TRUE(old) << old.error().message;
  EXPECT_EQ(old->compact_revision, before->revision + 1);  // the first lease write's

  // Never with 0, and not before the interval is over.
  auto never = Backend();
  never->SetCompaction(0ms);
  ASSERT_TRUE(never->WriteLease({.holder = "a", .epoch = 1, .version = 3}, 2));
  std::this_thread::sleep_for(30ms);
  ASSERT_TRUE(never->WriteLease({.holder = "a", .epoch = 1, .version = 4}, 3));
  auto hourly = Backend();
  hourly->SetCompaction(1h);
  ASSERT_TRUE(hourly->WriteLease({.holder = "a", .epoch = 1, .version = 5}, 4));
  ASSERT_TRUE(hourly->WriteLease({.holder = "a", .epoch = 1, .version = 6}, 5));
  auto kept = watch_from(before->revision + 2);  // the second lease write's
  ASSERT_TRUE(kept) << kept.error().message;
  EXPECT_EQ(kept->compact_revision, 0);
}

// A stopping leader's release must fit in the stop's budget (800 ms for the request in flight
// and the release): over the version it last read or wrote itself, a lease write is one txn,
// without reading the key's revision first; a lease changed meanwhile is still a conflict.
TEST_F(EtcdBackendTest, ALeaseWriteOverItsOwnLastVersionIsOneRequest) {
  std::atomic<int> ranges{0};
  auto leader = Backend([&ranges](const http::TlsOptions&) {
    return std::make_unique<CountingHttp>(&ranges, "/v3/kv/range");
  });
  ASSERT_TRUE(leader->WriteLease({.holder = "a", .epoch = 1, .version = 1}, std::nullopt));
  ASSERT_TRUE(leader->WriteLease({.holder = "a", .epoch = 1, .version = 2}, 1));  // a renewal
  ASSERT_TRUE(leader->WriteLease({.holder = "", .epoch = 1, .version = 3}, 2));   // the release
  EXPECT_EQ(ranges.load(), 0);
  auto read = leader->ReadLease();
  ASSERT_TRUE(read && *read);
  EXPECT_EQ((*read)->version, 3u);

  auto other = Backend();
  ASSERT_TRUE(other->WriteLease({.holder = "b", .epoch = 2, .version = 4}, 3));
  auto stale = leader->WriteLease({.holder = "a", .epoch = 1, .version = 5}, 3);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, ErrorCode::kConflict);
  EXPECT_EQ((*other->ReadLease())->holder, "b");
}

TEST_F(EtcdBackendTest, AFencedWriteFailsOnceTheLeaseMovedOn) {
  auto old_leader = Backend();
  auto new_leader = Backend();
  ASSERT_TRUE(old_leader->WriteLease({.holder = "a", .epoch = 1, .version = 1}, std::nullopt));
  auto write = WriteOf({SeedRecord(1, "10.0.0.1")}, 0);
  write.fence = Fence{.holder = "a", .epoch = 1};
  ASSERT_TRUE(old_leader->Write(write));

  // a pauses; b takes the lease over (epoch 2).
  ASSERT_TRUE(new_leader->WriteLease({.holder = "b", .epoch = 2, .version = 2}, 1));
  auto late = WriteOf({SeedRecord(2, "10.0.0.2")}, 1);
  late.fence = Fence{.holder = "a", .epoch = 1};
  auto refused = old_leader->Write(late);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kConflict);
  EXPECT_NE(refused.error().message.find("lease"), std::string::npos) << refused.error().message;
  auto all = new_leader->ReadAll();
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 1u);  // slot 2 never written

  late.fence = Fence{.holder = "b", .epoch = 2};
  EXPECT_TRUE(new_leader->Write(late));
}

// The engine over etcd: 300 slots need three chained txns (126 records each at most), and the
// table reads back whole at the generation of the last one.
TEST_F(EtcdBackendTest, TheEngineChainsALargeWriteAndReadsItBack) {
  constexpr int kSlots = 300;
  SlotTableStore store(Backend(), kSlots);
  std::vector<Slot> slots;
  for (int id = 1; id <= kSlots; ++id) {
    slots.push_back(Slot{.id = id,
                         .status = SlotStatus::kEnabled,
                         .target = {.address = fmt::format("10.1.{}.{}", id / 256, id % 256),
                                    .port = 8080,
                                    .name = fmt::format("web-{}", id),
                                    .group = "asg-a",
                                    .az = "az-1"},
                         .weight = 5,
                         .last_weight_update = WallTime{std::chrono::seconds{1'700'000'000}}});
  }
  auto generation = store.WriteSlots(slots, 0, 0);
  ASSERT_TRUE(generation) << generation.error().message;
  EXPECT_EQ(*generation, 3u);
  auto table = store.ReadTable();
  ASSERT_TRUE(table) << table.error().message;
  EXPECT_EQ(table->generation, 3u);
  EXPECT_EQ(table->slots, slots);
  auto read = store.ReadGeneration();
  ASSERT_TRUE(read);
  EXPECT_EQ(*read, 3u);
}

// The held removal rides on the generation key, written whole by every write: one that does
// not say (`hsdo set-state`, another process) keeps the hold it is conditioned on.
TEST_F(EtcdBackendTest, TheRemovalHoldIsWrittenWithTheGenerationAndKeptByWritesThatDoNotSay) {
  const std::string prefix =
      std::string("/test/") + ::testing::UnitTest::GetInstance()->current_test_info()->name();
  SlotTableStore leader(Backend(), 5);
  const std::vector<Slot> changed = {Slot{.id = 3,
                                          .status = SlotStatus::kEnabled,
                                          .target = {.address = "10.0.0.3", .name = "web-3"},
                                          .weight = 1,
                                          .last_weight_update = WallTime{}}};
  const HeldRemoval hold{.slots = {1, 2}, .base = 2};
  ASSERT_TRUE(leader.WriteSlots(changed, 0, 0, hold));
  EXPECT_EQ(leader.ReadTable()->removal_hold, hold);
  SlotTableStore other(Backend(), 5);  // set-state, with a backend that read nothing yet
  auto table = other.ReadTable();
  ASSERT_TRUE(table) << table.error().message;
  EXPECT_EQ(table->removal_hold, hold);
  ASSERT_TRUE(other.WriteSlots(changed, 0, 1));
  EXPECT_EQ(leader.ReadTable()->removal_hold, hold);
  ASSERT_TRUE(leader.WriteSlots(changed, 0, 2));  // the leader's own backend, from its write
  EXPECT_EQ(other.ReadTable()->removal_hold, hold);
  ASSERT_TRUE(leader.WriteSlots(changed, 0, 3, HeldRemoval{}));
  EXPECT_EQ(other.ReadTable()->removal_hold, HeldRemoval{});
  auto key =
      EtcdClient(ClientOptions{.endpoints = {etcd().endpoint()}}).Range(prefix + "/generation");
  ASSERT_TRUE(key && key->kvs.size() == 1u);
  EXPECT_EQ(key->kvs[0].value.find("RemovalHold"), std::string::npos) << key->kvs[0].value;
}

// Found in review: a corrupt /slots/1 (not JSON, or an id that is not the number 1) took the
// generation with it, and every write of the orchestrator then conflicted, for good. The
// record is counted and read as free; the generation and the writes go on.
TEST_F(EtcdBackendTest, ACorruptRecord1LeavesTheGenerationAndTheWritesAlone) {
  auto backend = Backend();
  EtcdClient client(ClientOptions{.endpoints = {etcd().endpoint()}, .request_timeout = 2s});
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string key = std::string("/test/") + info->name() + "/slots/1";
  SlotTableStore store(std::move(backend), 4);
  const std::vector<Slot> two = {Slot{
      .id = 2, .status = SlotStatus::kEnabled, .target = {.address = "10.0.0.2"}, .weight = 1}};
  ASSERT_TRUE(store.WriteSlots(two, 0, 0));
  for (const std::string value : {"not json", R"({"BackendServerID": "1"})"}) {
    ASSERT_TRUE(client.Txn(TxnRequest{.success = {Put{.key = key, .value = value}}})) << value;
    auto table = store.ReadTable();
    ASSERT_TRUE(table) << table.error().message;
    EXPECT_EQ(table->invalid_records, 1) << value;
    EXPECT_EQ(table->invalid_ids, std::vector<int>{1}) << value;
    EXPECT_FALSE(table->slots[0].filled());
    EXPECT_TRUE(table->slots[1].enabled());
    auto written = store.WriteSlots(two, 0, table->generation);
    EXPECT_TRUE(written) << value << ": " << written.error().message;
  }
}

// Found in review: a corrupt /slots/2 (not JSON, or another slot's BackendServerID) read as
// a free slot 2 not known as invalid (so every agent took its target out), or as the other
// slot's record. It is slot 2's invalid record, in a whole read and a read by id alike.
TEST_F(EtcdBackendTest, ACorruptSlotValueIsThatSlotsInvalidRecord) {
  auto backend = Backend();
  EtcdBackend* raw = backend.get();
  EtcdClient client(ClientOptions{.endpoints = {etcd().endpoint()}, .request_timeout = 2s});
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string key = std::string("/test/") + info->name() + "/slots/2";
  SlotTableStore store(std::move(backend), 4);
  const std::vector<Slot> slots = {
      Slot{.id = 2, .status = SlotStatus::kEnabled, .target = {.address = "10.0.0.2"}, .weight = 1},
      Slot{
          .id = 3, .status = SlotStatus::kEnabled, .target = {.address = "10.0.0.3"}, .weight = 1}};
  ASSERT_TRUE(store.WriteSlots(slots, 0, 0));
  hsdo::testing::LogCapture log;
  for (const std::string value : {"not json", R"({"BackendServerID": 3, "IPAddress": "10.0.0.9",
      "BackendServerStatus": "enabled", "Weight": 1})"}) {
    ASSERT_TRUE(client.Txn(TxnRequest{.success = {Put{.key = key, .value = value}}})) << value;
    for (int read = 0; read < 3; ++read) {  // said once per cause, read every minute
      store.ReadWholeNext();
      auto table = store.ReadTable();
      ASSERT_TRUE(table) << table.error().message;
      EXPECT_EQ(table->invalid_ids, std::vector<int>{2}) << value;
      EXPECT_FALSE(table->slots[1].filled()) << value;
      EXPECT_EQ(table->slots[2].target.address, "10.0.0.3") << value;
    }
    auto record = raw->Get(2, {}, true);
    ASSERT_TRUE(record && *record) << value;
    EXPECT_EQ(RecordId(**record), 2) << value;
    EXPECT_FALSE(RecordToSlot(**record, 2)) << value;
  }
  EXPECT_EQ(log.Count("read as an invalid record of slot 2"), 2) << log.text();
}

// Only the keys hsdo writes are slot records: `slots/0007` (or `slots/+7`) written by hand is
// skipped, not read as slot 7 filled on every agent.
TEST_F(EtcdBackendTest, AKeyThatIsNotAnIdAsHsdoSpellsItIsNoSlot) {
  auto backend = Backend();
  EtcdClient client(ClientOptions{.endpoints = {etcd().endpoint()}, .request_timeout = 2s});
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string slots = std::string("/test/") + info->name() + "/slots/";
  SlotTableStore store(std::move(backend), 10);
  const Slot slot{
      .id = 2, .status = SlotStatus::kEnabled, .target = {.address = "10.0.0.2"}, .weight = 1};
  ASSERT_TRUE(store.WriteSlots(std::span<const Slot>(&slot, 1), 0, 0));
  const std::string record = R"({"BackendServerID": 7, "IPAddress": "10.9.9.9",
      "BackendServerStatus": "enabled", "Weight": 1})";
  for (const std::string key : {"0007", "+7", "7 "}) {
    ASSERT_TRUE(client.Txn(TxnRequest{.success = {Put{.key = slots + key, .value = record}}}));
  }
  store.ReadWholeNext();
  auto table = store.ReadTable();
  ASSERT_TRUE(table) << table.error().message;
  EXPECT_FALSE(table->slots[6].filled()) << table->slots[6].target.address;
  EXPECT_TRUE(table->slots[1].filled());
  EXPECT_EQ(table->invalid_records, 0);
}

TEST_F(EtcdBackendTest, DrainingSlotsAndOverridesPassThroughTheJson) {
  SlotTableStore store(Backend(), 3);
  Slot draining{.id = 1,
                .status = SlotStatus::kDraining,
                .target = {.address = "10.0.0.1", .name = "web-1", .group = "asg-a"},
                .weight = 5,
                .last_weight_update = WallTime{std::chrono::seconds{1'700'000'000}},
                .drain_since = WallTime{std::chrono::seconds{1'700'000'100}},
                .admin = AdminState::kMaint};
  Slot overridden = draining;
  overridden.id = 2;
  overridden.status = SlotStatus::kEnabled;
  overridden.target.address = "10.0.0.2";
  overridden.drain_since.reset();
  overridden.admin = AdminState::kDrain;
  ASSERT_TRUE(store.WriteSlots(std::vector<Slot>{draining, overridden}, 0, 0));
  auto table = store.ReadTable();
  ASSERT_TRUE(table) << table.error().message;
  EXPECT_EQ(table->slots[0], draining);
  EXPECT_EQ(table->slots[1], overridden);
  // Back to enabled without an override: both attributes are gone from slot 1 (record 1).
  Slot back = draining;
  back.status = SlotStatus::kEnabled;
  back.drain_since.reset();
  back.admin = AdminState::kNone;
  ASSERT_TRUE(store.WriteSlots(std::vector<Slot>{back}, 0, table->generation));
  table = store.ReadTable();
  ASSERT_TRUE(table) << table.error().message;
  EXPECT_EQ(table->slots[0], back);
}

// A cluster rebuilt, or restored from an older snapshot, at the same endpoints: its revisions
// count again from below the ones the backends saw. One member of its own (it is wiped).
class RebuiltClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(etcd_.Start());
    // Other keys (node reports, lease renewals, other applications) move the revision on,
    // far past the generation key's.
    EtcdClient other(ClientOptions{.endpoints = {etcd_.endpoint()}});
    for (int i = 0; i < 30; ++i) {
      TxnRequest put;
      put.success.push_back(Put{.key = "/other/" + std::to_string(i), .value = "x"});
      ASSERT_TRUE(other.Txn(put));
    }
  }
  std::unique_ptr<EtcdBackend> Backend() {
    return std::make_unique<EtcdBackend>(
        std::make_unique<EtcdClient>(
            ClientOptions{.endpoints = {etcd_.endpoint()}, .request_timeout = 2s}),
        "/test/rebuilt");
  }
  void Rebuild() {
    etcd_.Stop();
    etcd_.WipeData();
    ASSERT_TRUE(etcd_.Start());
  }
  testing::EtcdProcess etcd_;
};

// The orchestrator writes its table again over the rebuilt cluster; once that table reaches the
// generation the backend remembered from before, its writes must still land (they were all
// refused as conflicts, for good: the fleet's table frozen while the leader kept its lease).
TEST_F(RebuiltClusterTest, WritesGoOnOnceTheTableReachesTheGenerationRememberedFromBefore) {
  auto backend = Backend();
  ASSERT_TRUE(backend->Write(WriteOf({SeedRecord(2, "10.0.0.2")}, 0)));
  ASSERT_TRUE(backend->Write(WriteOf({SeedRecord(2, "10.0.0.3")}, 1)));
  Rebuild();
  auto stale = backend->Write(WriteOf({SeedRecord(2, "10.0.0.4")}, 2));
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, ErrorCode::kConflict);
  // The orchestrator reads generation 0 and writes generations 1 and 2 again.
  ASSERT_TRUE(backend->ReadAll());
  ASSERT_TRUE(backend->Write(WriteOf({SeedRecord(2, "10.0.0.5")}, 0)));
  ASSERT_TRUE(backend->Write(WriteOf({SeedRecord(2, "10.0.0.6")}, 1)));
  for (int cycle = 0; cycle < 2; ++cycle) {
    ASSERT_TRUE(backend->ReadAll());
    auto write = backend->Write(WriteOf({SeedRecord(2, "10.0.0.7")}, 2 + cycle));
    EXPECT_TRUE(write) << "cycle " << cycle << ": " << write.error().message;
  }
}

// The agent's watch, re-created after its member went away, must see the rebuilt cluster's
// writes (it waited for a revision past the old cluster's, and the agent fell back to its poll).
TEST_F(RebuiltClusterTest, TheWatchSeesTheWritesOfTheRebuiltCluster) {
  auto writer = Backend();
  auto watcher = Backend();
  std::atomic<int> calls{0};
  ASSERT_TRUE(watcher->Watch([&calls] { ++calls; }));
  const auto wait_for = [&](int n, std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (calls.load() < n && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(2ms);
    }
    return calls.load() >= n;
  };
  ASSERT_TRUE(wait_for(1, 5s));
  ASSERT_TRUE(writer->Write(WriteOf({SeedRecord(2, "10.0.0.2")}, 0)));
  ASSERT_TRUE(wait_for(2, 5s));
  Rebuild();
  // The stream breaks, the watcher wakes the agent and watches again; then it is quiet.
  std::this_thread::sleep_for(3s);
  auto fresh = Backend();
  for (std::uint64_t generation = 0; generation < 3; ++generation) {
    const int before = calls.load();
    ASSERT_TRUE(
        fresh->Write(WriteOf({SeedRecord(2, "10.0.1." + std::to_string(generation))}, generation)));
    EXPECT_TRUE(wait_for(before + 1, 3s)) << "write " << generation << " woke nobody";
  }
}

// Found in review (long-running hygiene): the watch's recovery was said at the first write
// after it, so a quiet table's log said "watch lost" for days after etcd came back.
TEST_F(RebuiltClusterTest, AWatchBackIsSaidWithoutWaitingForAWrite) {
  auto watcher = Backend();
  hsdo::testing::LogCapture log;
  std::atomic<int> calls{0};
  ASSERT_TRUE(watcher->Watch([&calls] { ++calls; }));
  const auto said = [&](const std::string& text, std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (log.Count(text) == 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
    }
    return log.Count(text) > 0;
  };
  for (int i = 0; i < 250 && calls.load() == 0; ++i) std::this_thread::sleep_for(20ms);
  ASSERT_GE(calls.load(), 1);  // the watch started
  etcd_.Stop();
  ASSERT_TRUE(said("watch lost", 10s)) << log.text();
  ASSERT_TRUE(etcd_.Start());
  EXPECT_TRUE(said("store: watching again", 10s)) << log.text();
}

}  // namespace
}  // namespace hsdo::etcd
