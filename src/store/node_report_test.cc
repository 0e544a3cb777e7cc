#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <prometheus/registry.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/testing/temp_dir.h"
#include "store/node_report_codec.h"
#include "store/sqlite_store.h"

namespace hsdo {
namespace {

using namespace std::chrono_literals;

NodeReport Sample(std::string name = "web-1") {
  return NodeReport{.name = std::move(name),
                    .applied_generation = 42,
                    .applied_at = WallTime{1'764'500'000'123ms},
                    .reported_at = WallTime{1'764'500'001'000ms},
                    .draining_sessions = {{3, 12}, {17, 0}},
                    .interval = 2500ms,
                    .instance = "9f86d081884c7d65",
                    .version = "0.1.0"};
}

TEST(NodeReportCodec, RoundTripsAndIsTheDocumentedJson) {
  const std::string text = EncodeNodeReport(Sample());
  EXPECT_EQ(text, R"({"applied_at_ms":1764500000123,"applied_generation":42,)"
                  R"("draining_sessions":{"17":0,"3":12},"instance":"9f86d081884c7d65",)"
                  R"("interval_ms":2500,"name":"web-1","reported_at_ms":1764500001000,)"
                  R"("version":"0.1.0"})");
  auto back = DecodeNodeReport(text);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, Sample());
}

TEST(NodeReportCodec, DrainingSessionsMayBeAbsent) {
  auto report = DecodeNodeReport(
      R"({"name":"a","applied_generation":0,"applied_at_ms":0,"reported_at_ms":5})");
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_TRUE(report->draining_sessions.empty());
  EXPECT_EQ(report->reported_at, WallTime{5ms});
  EXPECT_EQ(report->interval, 0ms);  // a record of an earlier version: no interval_ms
  EXPECT_EQ(report->instance, "");   // nor instance
  EXPECT_EQ(report->version, "");    // nor version
}

// The version only informs: a record whose version cannot be shown is still the node's report
// (its sessions hold drains), read without it.
TEST(NodeReportCodec, AVersionThatCannotBeShownReadsAsNone) {
  const std::string head = R"({"name":"a","applied_generation":1,"applied_at_ms":1,)"
                           R"("reported_at_ms":2,"draining_sessions":{"3":4},"version":)";
  for (const std::string& version :
       {std::string("7"), std::string("null"), std::string(R"("a b")"), std::string(R"("1.0\n")"),
        std::string(R"("")"), "\"" + std::string(kMaxVersionBytes + 1, '1') + "\""}) {
    auto report = DecodeNodeReport(head + version + "}");
    ASSERT_TRUE(report) << version << ": " << report.error().message;
    EXPECT_EQ(report->version, "") << version;
    EXPECT_EQ(report->draining_sessions, (std::map<int, int>{{3, 4}})) << version;
  }
  auto report = DecodeNodeReport(head + R"("1.2.3+g4f5e6d7~rc1"})");
  ASSERT_TRUE(report);
  EXPECT_EQ(report->version, "1.2.3+g4f5e6d7~rc1");
}

// The slots a node holds at weight 0 until its health check passes (they hold ramps): absent
// from an earlier version's record (it did not say), and one that cannot be read is no reason
// to skip the record (its sessions hold drains): the node then counts as one that did not say.
TEST(NodeReportCodec, PendingAdmissionsRoundTripAndABadListReadsAsNotSaid) {
  NodeReport sample = Sample();
  sample.pending_admission = std::set<int>{4, 9};
  const std::string text = EncodeNodeReport(sample);
  EXPECT_NE(text.find(R"("pending_admission":[4,9])"), std::string::npos) << text;
  auto back = DecodeNodeReport(text);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, sample);
  sample.pending_admission = std::set<int>{};
  back = DecodeNodeReport(EncodeNodeReport(sample));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->pending_admission, std::set<int>{});
  EXPECT_EQ(DecodeNodeReport(EncodeNodeReport(Sample()))->pending_admission, std::nullopt);

  const std::string head = R"({"name":"a","applied_generation":1,"applied_at_ms":1,)"
                           R"("reported_at_ms":2,"draining_sessions":{"3":4},"pending_admission":)";
  for (const std::string& pending :
       {std::string("7"), std::string("null"), std::string("[0]"), std::string("[-1]"),
        std::string("[1.5]"), std::string(R"(["3"])"), std::string("[1,2000000]"),
        std::string("{}")}) {
    auto report = DecodeNodeReport(head + pending + "}");
    ASSERT_TRUE(report) << pending << ": " << report.error().message;
    EXPECT_EQ(report->pending_admission, std::nullopt) << pending;
    EXPECT_EQ(report->draining_sessions, (std::map<int, int>{{3, 4}})) << pending;
  }
}

// Whether every slot the node serves is gated by its check, and the slots it cannot vouch for
// (they prove slots for the removal guard): absent from an earlier version's record (it did
// not say); anything but a boolean, or an unreadable list, reads as a node that cannot vouch.
TEST(NodeReportCodec, GatesEverySlotAndUnvouchedRoundTripAndAnythingElseCannotVouch) {
  NodeReport sample = Sample();
  sample.pending_admission = std::set<int>{};
  sample.gates_every_slot = true;
  sample.unvouched = {3, 8};
  const std::string text = EncodeNodeReport(sample);
  EXPECT_NE(text.find(R"("gates_every_slot":true)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("unvouched":[3,8])"), std::string::npos) << text;
  auto back = DecodeNodeReport(text);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, sample);
  sample.gates_every_slot = false;
  sample.unvouched.clear();
  back = DecodeNodeReport(EncodeNodeReport(sample));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->gates_every_slot, false);
  EXPECT_EQ(EncodeNodeReport(Sample()).find("gates_every_slot"), std::string::npos);
  EXPECT_EQ(DecodeNodeReport(EncodeNodeReport(Sample()))->gates_every_slot, std::nullopt);

  const std::string head = R"({"name":"a","applied_generation":1,"applied_at_ms":1,)"
                           R"("reported_at_ms":2,"draining_sessions":{"3":4},)";
  for (const std::string& tail :
       {std::string(R"("gates_every_slot":1)"), std::string(R"("gates_every_slot":"true")"),
        std::string(R"("gates_every_slot":null)"),
        std::string(R"("gates_every_slot":true,"unvouched":[0])"),
        std::string(R"("gates_every_slot":true,"unvouched":"3")")}) {
    auto report = DecodeNodeReport(head + tail + "}");
    ASSERT_TRUE(report) << tail << ": " << report.error().message;
    EXPECT_EQ(report->gates_every_slot, false) << tail;
    EXPECT_EQ(report->draining_sessions, (std::map<int, int>{{3, 4}})) << tail;
  }
}

// Invariant 5: what a peer wrote is validated, never trusted.
TEST(NodeReportCodec, RefusesEveryInvalidForm) {
  const std::string ok_tail = R"("applied_at_ms":1,"reported_at_ms":2)";
  const std::vector<std::string> invalid = {
      "",
      "not json",
      "[1]",
      R"({"applied_generation":1,)" + ok_tail + "}",                // no name
      R"({"name":"","applied_generation":1,)" + ok_tail + "}",      // empty name
      R"({"name":"a b","applied_generation":1,)" + ok_tail + "}",   // space
      R"({"name":"a\nb","applied_generation":1,)" + ok_tail + "}",  // control character
      R"({"name":")" + std::string(129, 'x') + R"(","applied_generation":1,)" + ok_tail + "}",
      R"({"name":7,"applied_generation":1,)" + ok_tail + "}",
      R"({"name":"a",)" + ok_tail + "}",  // no generation
      R"({"name":"a","applied_generation":-1,)" + ok_tail + "}",
      R"({"name":"a","applied_generation":1.5,)" + ok_tail + "}",
      R"({"name":"a","applied_generation":"1",)" + ok_tail + "}",
      R"({"name":"a","applied_generation":1,"reported_at_ms":2})",  // no applied_at
      R"({"name":"a","applied_generation":1,"applied_at_ms":-1,"reported_at_ms":2})",
      R"({"name":"a","applied_generation":1,"applied_at_ms":1,"reported_at_ms":1e20})",
      R"({"name":"a","applied_generation":1,"applied_at_ms":1,"reported_at_ms":99999999999999999})",
      // Year 9999: beyond what a WallTime holds (2262).
      R"({"name":"a","applied_generation":1,"applied_at_ms":1,"reported_at_ms":253402300799000})",
      R"({"name":"a","applied_generation":1,"applied_at_ms":9223372036855,"reported_at_ms":2})",
      R"({"name":"a","applied_generation":1,)" + ok_tail + R"(,"draining_sessions":[1]})",
      R"({"name":"a","applied_generation":1,)" + ok_tail + R"(,"draining_sessions":{"0":1}})",
      R"({"name":"a","applied_generation":1,)" + ok_tail + R"(,"draining_sessions":{"01":1}})",
      R"({"name":"a","applied_generation":1,)" + ok_tail + R"(,"draining_sessions":{"x":1}})",
      R"({"name":"a","applied_generation":1,)" + ok_tail + R"(,"draining_sessions":{"2":-1}})",
      R"({"name":"a","applied_generation":1,)" + ok_tail + R"(,"draining_sessions":{"2":"1"}})",
      R"({"name":"a","applied_generation":1,)" + ok_tail +
          R"(,"draining_sessions":{"2":4294967296}})",
      R"({"name":"a","applied_generation":1,)" + ok_tail + R"(,"draining_sessions":{"2000000":1}})",
      R"({"name":"a","applied_generation":1,)" + ok_tail + R"(,"interval_ms":-1})",
      R"({"name":"a","applied_generation":1,)" + ok_tail + R"(,"interval_ms":1.5})",
      R"({"name":"a","applied_generation":1,)" + ok_tail + R"(,"interval_ms":"1000"})",
      R"({"name":"a","applied_generation":1,)" + ok_tail + R"(,"interval_ms":31536000001})",
      R"({"name":"a","applied_generation":1,)" + ok_tail + R"(,"instance":7})",
      R"({"name":"a","applied_generation":1,)" + ok_tail + R"(,"instance":"9F86"})",
      R"({"name":"a","applied_generation":1,)" + ok_tail + R"(,"instance":"a b"})",
      R"({"name":"a","applied_generation":1,)" + ok_tail + R"(,"instance":")" +
          std::string(33, 'a') + R"("})",
  };
  for (const auto& text : invalid) {
    auto report = DecodeNodeReport(text);
    EXPECT_FALSE(report) << text;
    if (!report) {
      EXPECT_EQ(report.error().code, ErrorCode::kInvalidArgument);
    }
  }
  EXPECT_FALSE(DecodeNodeReport(std::string(kMaxNodeRecordBytes + 1, ' ')));
}

TEST(NodeReportCodec, ResolveNodeName) {
  EXPECT_EQ(*ResolveNodeName("edge-1.example"), "edge-1.example");
  auto host = ResolveNodeName("");
  ASSERT_TRUE(host) << host.error().message;  // the host name
  EXPECT_FALSE(host->empty());
  EXPECT_FALSE(ResolveNodeName("a b"));
}

TEST(NodeRecordLog, SkipsAndCountsBadRecordsAndNamesThatDoNotMatchTheirKey) {
  prometheus::Registry registry;
  NodeRecordLog log(&registry, "test store");
  const std::vector<StoredNodeRecord> records = {
      {"web-1", EncodeNodeReport(Sample("web-1"))},
      {"web-2", "{garbage"},
      {"web-3", EncodeNodeReport(Sample("web-9"))},  // claims another node's name
      {"web-4", EncodeNodeReport(Sample("web-4"))},
  };
  const auto reports = log.Decode(records);
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].name, "web-1");
  EXPECT_EQ(reports[1].name, "web-4");
  EXPECT_EQ(log.invalid(), 2u);
  log.Decode(records);
  EXPECT_EQ(log.invalid(), 4u);
}

class SqliteNodeReportsTest : public ::testing::Test {
 protected:
  testing::TempDir dir_;  // before path_, which is made from it
  std::string path_ = dir_.File("store/hsdo.db");
};

TEST_F(SqliteNodeReportsTest, AgentWritesItsRowAndReadersSeeIt) {
  ASSERT_TRUE(SqliteStore::Open(path_, 5));  // the orchestrator sets the file up
  SqliteNodeReports agent_a(path_, SqliteNodeReports::Mode::kWriter);
  SqliteNodeReports agent_b(path_, SqliteNodeReports::Mode::kWriter);
  ASSERT_TRUE(agent_a.Report(Sample("a")));
  ASSERT_TRUE(agent_b.Report(Sample("b")));
  NodeReport newer = Sample("a");
  newer.applied_generation = 43;
  newer.draining_sessions.clear();
  ASSERT_TRUE(agent_a.Report(newer));  // overwrites its own row

  SqliteNodeReports reader(path_, SqliteNodeReports::Mode::kReader);
  auto reports = reader.ReadNodeReports();
  ASSERT_TRUE(reports) << reports.error().message;
  ASSERT_EQ(reports->size(), 2u);
  EXPECT_EQ((*reports)[0], newer);
  EXPECT_EQ((*reports)[1], Sample("b"));
  EXPECT_FALSE(reader.Report(Sample("c")));  // a reader never writes
}

// The orchestrator's expiry of silent nodes, on its read-only reader: deleted only while the
// row holds the report read.
TEST_F(SqliteNodeReportsTest, ARowIsDeletedOnlyWhileItHoldsTheReportRead) {
  ASSERT_TRUE(SqliteStore::Open(path_, 5));
  SqliteNodeReports agent(path_, SqliteNodeReports::Mode::kWriter);
  NodeReport again = Sample("gone");
  again.reported_at += std::chrono::seconds(2);
  ASSERT_TRUE(agent.Report(again));
  ASSERT_TRUE(agent.Report(Sample("kept")));
  SqliteNodeReports reader(path_, SqliteNodeReports::Mode::kReader);
  ASSERT_EQ(reader.ReadNodeReports()->size(), 2u);
  auto deleted = reader.DeleteNodeReport("gone", Sample("gone").reported_at);
  ASSERT_TRUE(deleted) << deleted.error().message;
  EXPECT_FALSE(*deleted) << "the node reported since";
  deleted = reader.DeleteNodeReport("gone", again.reported_at);
  ASSERT_TRUE(deleted) << deleted.error().message;
  EXPECT_TRUE(*deleted);
  auto reports = reader.ReadNodeReports();
  ASSERT_TRUE(reports) << reports.error().message;
  ASSERT_EQ(reports->size(), 1u);
  EXPECT_EQ((*reports)[0].name, "kept");
  deleted = reader.DeleteNodeReport("gone", again.reported_at);
  ASSERT_TRUE(deleted) << deleted.error().message;
  EXPECT_FALSE(*deleted) << "gone already";
  ASSERT_TRUE(agent.Report(again));  // a node that comes back writes its row anew
  EXPECT_EQ(reader.ReadNodeReports()->size(), 2u);
}

// An SQLite agent watches the file its reports go to: its own reports must not wake it, every
// other write must (the table's, another agent's report).
TEST_F(SqliteNodeReportsTest, TellsItsOwnReportsFromOtherWrites) {
  auto orchestrator = SqliteStore::Open(path_, 5);
  ASSERT_TRUE(orchestrator);
  SqliteNodeReports agent_a(path_, SqliteNodeReports::Mode::kWriter);
  SqliteNodeReports agent_b(path_, SqliteNodeReports::Mode::kWriter);
  EXPECT_TRUE(agent_a.OthersMayHaveWritten());  // not connected: cannot tell
  ASSERT_TRUE(agent_a.Report(Sample("a")));
  EXPECT_TRUE(agent_a.OthersMayHaveWritten());  // the first look: nothing to compare with
  EXPECT_FALSE(agent_a.OthersMayHaveWritten());
  ASSERT_TRUE(agent_a.Report(Sample("a")));
  ASSERT_TRUE(agent_a.Report(Sample("a")));
  EXPECT_FALSE(agent_a.OthersMayHaveWritten()) << "its own reports";

  ASSERT_TRUE(agent_b.Report(Sample("b")));
  EXPECT_TRUE(agent_a.OthersMayHaveWritten()) << "another agent's report";
  ASSERT_TRUE(agent_a.Report(Sample("a")));
  EXPECT_FALSE(agent_a.OthersMayHaveWritten());

  ASSERT_TRUE((*orchestrator)->WriteSlots(std::vector<Slot>{}, 0, 0));
  ASSERT_TRUE(agent_a.Report(Sample("a")));  // its own, after the table's write
  EXPECT_TRUE(agent_a.OthersMayHaveWritten()) << "the slot table's write";
  EXPECT_FALSE(agent_a.OthersMayHaveWritten());
}

// An agent writes its report with its store's watch narrowed (SlotStore::Unwatched), so that
// the report wakes none of its threads. Another connection's commit in that window is not
// lost: the call back after the write finds it; the agent's own report alone wakes nothing.
TEST_F(SqliteNodeReportsTest, AnotherWriteDuringAnUnwatchedReportStillWakesTheAgent) {
  auto orchestrator = SqliteStore::Open(path_, 5);
  ASSERT_TRUE(orchestrator);
  auto store = SqliteStore::Open(path_, 5, SqliteOpenMode::kReadOnly);
  ASSERT_TRUE(store);
  SqliteNodeReports reports(path_, SqliteNodeReports::Mode::kWriter);
  ASSERT_TRUE(reports.Report(Sample("a")));
  (void)reports.OthersMayHaveWritten();  // the first look
  std::atomic<int> woken{0};
  ASSERT_TRUE((*store)->Watch([&] {
    if (reports.OthersMayHaveWritten()) ++woken;
  }));

  (*store)->Unwatched([&] { ASSERT_TRUE(reports.Report(Sample("a"))); });
  EXPECT_EQ(woken.load(), 0) << "its own report";
  (*store)->Unwatched([&] {
    ASSERT_TRUE((*orchestrator)->WriteSlots(std::vector<Slot>{}, 0, 0));
    ASSERT_TRUE(reports.Report(Sample("a")));
  });
  EXPECT_EQ(woken.load(), 1) << "the table's write, made while the watch was narrowed";
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the watcher's thread: nothing
  EXPECT_EQ(woken.load(), 1);

  ASSERT_TRUE((*orchestrator)->WriteSlots(std::vector<Slot>{}, 0, 1));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (woken.load() == 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_EQ(woken.load(), 2) << "the watch is whole again";
}

// A heartbeat every 2 x INTERVAL on every agent of the host: each rewrites its row in place,
// one page (one WAL frame) per report, not the row and the name index's page too.
TEST_F(SqliteNodeReportsTest, AReportRewritesOnePage) {
  ASSERT_TRUE(SqliteStore::Open(path_, 5));
  SqliteNodeReports agent(path_, SqliteNodeReports::Mode::kWriter);
  for (const char* name : {"a", "b", "c"}) ASSERT_TRUE(agent.Report(Sample(name)));
  constexpr std::uintmax_t kFrame = 24 + 4096;  // a frame's header and its page
  const std::uintmax_t before = std::filesystem::file_size(path_ + "-wal");
  for (int i = 0; i < 10; ++i) {
    NodeReport report = Sample("b");
    report.applied_generation = static_cast<std::uint64_t>(100 + i);
    ASSERT_TRUE(agent.Report(report));
  }
  EXPECT_LE(std::filesystem::file_size(path_ + "-wal") - before, 10 * kFrame);
  SqliteNodeReports reader(path_, SqliteNodeReports::Mode::kReader);
  auto reports = reader.ReadNodeReports();
  ASSERT_TRUE(reports);
  ASSERT_EQ(reports->size(), 3u);
  EXPECT_EQ((*reports)[1].applied_generation, 109u);
}

// The agent must never create the store: no file, no table → not stored, logged once, counted.
TEST_F(SqliteNodeReportsTest, AgentNeverCreatesTheFileNorTheTable) {
  prometheus::Registry registry;
  SqliteNodeReports agent(path_, SqliteNodeReports::Mode::kWriter, &registry);
  auto r = agent.Report(Sample());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(path_));
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(path_).parent_path()));

  // A store without the nodes table (an older hsdo's): still nothing written.
  std::filesystem::create_directories(std::filesystem::path(path_).parent_path());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE slots (BackendServerID INTEGER PRIMARY KEY)", nullptr,
                         nullptr, nullptr),
            SQLITE_OK);
  EXPECT_FALSE(agent.Report(Sample()));
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master WHERE name = 'nodes'", -1,
                               &stmt, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(stmt, 0), 0);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  EXPECT_EQ(agent.log().unstored(), 2u);

  // Once the orchestrator has set the store up, the same sink stores its report.
  ASSERT_TRUE(SqliteStore::Open(path_, 5));
  ASSERT_TRUE(agent.Report(Sample())) << "the table now exists";
  SqliteNodeReports reader(path_, SqliteNodeReports::Mode::kReader);
  EXPECT_EQ(reader.ReadNodeReports()->size(), 1u);
}

// The orchestrator reads the reports in the file at the path: an agent whose store was made
// again there reports into the new file, not into the deleted one it had opened.
TEST_F(SqliteNodeReportsTest, AgentReportsIntoTheStoreMadeAgainAtItsPath) {
  ASSERT_TRUE(SqliteStore::Open(path_, 5));
  SqliteNodeReports agent(path_, SqliteNodeReports::Mode::kWriter);
  ASSERT_TRUE(agent.Report(Sample("a")));
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path_ + suffix);
  ASSERT_TRUE(agent.Report(Sample("a"))) << "nothing at the path: into the file it had";
  // The agent's watcher asks whether to wake it: a store made again is news, whatever the old
  // connection says (it sees only the writes to the deleted file).
  EXPECT_TRUE(agent.OthersMayHaveWritten()) << "nothing at the path: cannot tell";
  ASSERT_TRUE(SqliteStore::Open(path_, 5));  // a restarted orchestrator makes it again
  EXPECT_TRUE(agent.OthersMayHaveWritten()) << "a store made again at the path";
  ASSERT_TRUE(agent.Report(Sample("a")));
  SqliteNodeReports reader(path_, SqliteNodeReports::Mode::kReader);
  auto reports = reader.ReadNodeReports();
  ASSERT_TRUE(reports) << reports.error().message;
  ASSERT_EQ(reports->size(), 1u);
  EXPECT_EQ((*reports)[0], Sample("a"));
}

// Found in review: the orchestrator's reader kept its connection to a store replaced at the
// path (made again, restored), so it read that file's last reports for ever: every node looked
// silent, drains waited for their timeout, and every record expired.
TEST_F(SqliteNodeReportsTest, TheReaderReadsTheStoreMadeAgainAtItsPath) {
  ASSERT_TRUE(SqliteStore::Open(path_, 5));
  SqliteNodeReports reader(path_, SqliteNodeReports::Mode::kReader);
  {
    SqliteNodeReports agent(path_, SqliteNodeReports::Mode::kWriter);
    ASSERT_TRUE(agent.Report(Sample("a")));
  }
  ASSERT_EQ(reader.ReadNodeReports()->size(), 1u);
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path_ + suffix);
  ASSERT_TRUE(SqliteStore::Open(path_, 5));
  NodeReport later = Sample("a");
  later.reported_at += 2s;
  SqliteNodeReports agent(path_, SqliteNodeReports::Mode::kWriter);
  ASSERT_TRUE(agent.Report(later));
  auto reports = reader.ReadNodeReports();
  ASSERT_TRUE(reports) << reports.error().message;
  ASSERT_EQ(reports->size(), 1u);
  EXPECT_EQ((*reports)[0], later);
}

TEST_F(SqliteNodeReportsTest, ReaderOfAMissingStoreOrTableSeesNoRecords) {
  SqliteNodeReports reader(path_, SqliteNodeReports::Mode::kReader);
  auto none = reader.ReadNodeReports();
  ASSERT_TRUE(none) << none.error().message;
  EXPECT_TRUE(none->empty());
  EXPECT_FALSE(std::filesystem::exists(path_));
}

TEST_F(SqliteNodeReportsTest, InvalidRowsAreSkippedAndCounted) {
  ASSERT_TRUE(SqliteStore::Open(path_, 5));
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  const std::string good = EncodeNodeReport(Sample("good"));
  const std::string sql =
      "INSERT INTO nodes VALUES ('bad', '{\"name\":\"bad\"}'), ('x', 'zz'), ('good', '" + good +
      "'), ('liar', '" + good + "')";
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  SqliteNodeReports reader(path_, SqliteNodeReports::Mode::kReader);
  auto reports = reader.ReadNodeReports();
  ASSERT_TRUE(reports) << reports.error().message;
  ASSERT_EQ(reports->size(), 1u);
  EXPECT_EQ((*reports)[0].name, "good");
  EXPECT_EQ(reader.log().invalid(), 3u);
}

std::size_t OpenDescriptors() {
  std::error_code ec;
  const auto entries = std::filesystem::directory_iterator("/proc/self/fd", ec);
  return static_cast<std::size_t>(std::distance(entries, std::filesystem::directory_iterator()));
}

// A read that fails part-way (a corrupt page, an I/O error) drops its connection to open a
// fresh one next time: closed while the read's statement was still open, SQLite refused to
// close it and every failed read, once per INTERVAL, leaked a connection and its descriptors.
TEST_F(SqliteNodeReportsTest, AFailedReadLeaksNoConnection) {
  ASSERT_TRUE(SqliteStore::Open(path_, 5));
  {
    SqliteNodeReports agent(path_, SqliteNodeReports::Mode::kWriter);
    for (int i = 0; i < 40; ++i) ASSERT_TRUE(agent.Report(Sample(fmt::format("node-{}", i))));
  }
  sqlite3* db = nullptr;  // the last connection checkpoints the WAL into the file as it closes
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  {  // every page but the schema's: the prepare succeeds, the read fails
    std::fstream file(path_, std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(0, std::ios::end);
    const auto size = static_cast<std::size_t>(file.tellg());
    ASSERT_GT(size, 4096u * 2);
    file.seekp(4096);
    file << std::string(size - 4096, '\xA5');
  }
  SqliteNodeReports reader(path_, SqliteNodeReports::Mode::kReader);
  ASSERT_FALSE(reader.ReadNodeReports());
  const std::size_t before = OpenDescriptors();
  for (int i = 0; i < 20; ++i) EXPECT_FALSE(reader.ReadNodeReports());
  EXPECT_EQ(OpenDescriptors(), before);
}

// Node rows are apart from the slots: a slot-table read sees exactly the same records.
TEST_F(SqliteNodeReportsTest, NodeRowsAreInvisibleToTheSlotTable) {
  auto store = SqliteStore::Open(path_, 3);
  ASSERT_TRUE(store);
  auto before = (*store)->ReadTable();
  ASSERT_TRUE(before);
  SqliteNodeReports agent(path_, SqliteNodeReports::Mode::kWriter);
  ASSERT_TRUE(agent.Report(Sample()));
  auto after = (*store)->ReadTable();
  ASSERT_TRUE(after);
  EXPECT_EQ(after->slots, before->slots);
  EXPECT_EQ(after->generation, before->generation);
}

// A writer holding the lock never makes a report wait longer than its short busy timeout.
TEST_F(SqliteNodeReportsTest, ABusyStoreFailsTheReportQuickly) {
  ASSERT_TRUE(SqliteStore::Open(path_, 5));
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  SqliteNodeReports agent(path_, SqliteNodeReports::Mode::kWriter);
  const auto start = std::chrono::steady_clock::now();
  auto r = agent.Report(Sample());
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_FALSE(r);
  EXPECT_LT(took, 2s);
  sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  EXPECT_TRUE(agent.Report(Sample()));
}

}  // namespace
}  // namespace hsdo
