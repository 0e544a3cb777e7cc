// Node records on etcd (EtcdNodeReports), against a real etcd member.
#include <gtest/gtest.h>

#include <chrono>

#include "etcd/etcd_backend.h"
#include "etcd/testing/etcd_process.h"

namespace hsdo::etcd {
namespace {

using namespace std::chrono_literals;

class EtcdNodeReportsTest : public testing::EtcdSuite {
 protected:
  std::string Prefix() const {
    return std::string("/test/") + ::testing::UnitTest::GetInstance()->current_test_info()->name();
  }
  std::unique_ptr<EtcdClient> Client() {
    return std::make_unique<EtcdClient>(
        ClientOptions{.endpoints = {etcd().endpoint()}, .request_timeout = 2s});
  }
  static NodeReport Sample(std::string name) {
    return NodeReport{.name = std::move(name),
                      .applied_generation = 7,
                      .applied_at = WallTime{1'764'500'000'000ms},
                      .reported_at = WallTime{1'764'500'000'250ms},
                      .draining_sessions = {{4, 2}}};
  }
};

TEST_F(EtcdNodeReportsTest, EachNodeHasItsKeyAndReadersSeeEveryValidOne) {
  EtcdNodeReports agent_a(Client(), Prefix());
  EtcdNodeReports agent_b(Client(), Prefix());
  ASSERT_TRUE(agent_a.Report(Sample("a")));
  ASSERT_TRUE(agent_b.Report(Sample("b/with-slash")));
  NodeReport newer = Sample("a");
  newer.applied_generation = 8;
  ASSERT_TRUE(agent_a.Report(newer));

  // Bad records under the prefix are skipped and counted: not JSON, a name not its key's.
  auto raw = Client();
  TxnRequest junk;
  junk.success.push_back(Put{.key = Prefix() + "/nodes/junk", .value = "{"});
  junk.success.push_back(
      Put{.key = Prefix() + "/nodes/liar", .value = EncodeNodeReport(Sample("a"))});
  ASSERT_TRUE(raw->Txn(junk));

  EtcdNodeReports reader(Client(), Prefix());
  auto reports = reader.ReadNodeReports();
  ASSERT_TRUE(reports) << reports.error().message;
  ASSERT_EQ(reports->size(), 2u);
  EXPECT_EQ((*reports)[0], newer);
  EXPECT_EQ((*reports)[1], Sample("b/with-slash"));
  EXPECT_EQ(reader.log().invalid(), 2u);
  EXPECT_EQ(reader.NodeKey("a"), Prefix() + "/nodes/a");
  auto stored = raw->Range(Prefix() + "/nodes/a");
  ASSERT_TRUE(stored);
  ASSERT_EQ(stored->kvs.size(), 1u);
  EXPECT_EQ(stored->kvs[0].value, EncodeNodeReport(newer));
}

// The orchestrator's expiry of silent nodes: deleted only while the key holds the report read.
TEST_F(EtcdNodeReportsTest, ARecordIsDeletedOnlyWhileItHoldsTheReportRead) {
  EtcdNodeReports agent(Client(), Prefix());
  EtcdNodeReports leader(Client(), Prefix());
  NodeReport again = Sample("gone");
  again.reported_at += 2s;
  ASSERT_TRUE(agent.Report(again));
  ASSERT_TRUE(agent.Report(Sample("kept")));
  auto deleted = leader.DeleteNodeReport("gone", Sample("gone").reported_at);
  ASSERT_TRUE(deleted) << deleted.error().message;
  EXPECT_FALSE(*deleted) << "the node reported since";
  deleted = leader.DeleteNodeReport("gone", again.reported_at);
  ASSERT_TRUE(deleted) << deleted.error().message;
  EXPECT_TRUE(*deleted);
  auto reports = leader.ReadNodeReports();
  ASSERT_TRUE(reports) << reports.error().message;
  ASSERT_EQ(reports->size(), 1u);
  EXPECT_EQ((*reports)[0].name, "kept");
  deleted = leader.DeleteNodeReport("gone", again.reported_at);
  ASSERT_TRUE(deleted) << deleted.error().message;
  EXPECT_FALSE(*deleted) << "gone already";
}

// The delete's own condition, which the test above cannot reach (its reads see the new report
// first): a key written between the read and the delete is kept.
TEST_F(EtcdNodeReportsTest, TheDeleteTxnKeepsAKeyWrittenSinceItsRead) {
  auto raw = Client();
  const std::string key = Prefix() + "/nodes/n";
  TxnRequest put;
  put.success.push_back(Put{.key = key, .value = "1"});
  ASSERT_TRUE(raw->Txn(put));
  const auto read = raw->Range(key);
  ASSERT_TRUE(read);
  ASSERT_EQ(read->kvs.size(), 1u);
  ASSERT_TRUE(raw->Txn(put));  // the node reports again
  TxnRequest remove;
  remove.compares.push_back(Compare{.key = key, .number = read->kvs[0].mod_revision});
  remove.success_delete.push_back(key);
  auto removed = raw->Txn(remove);
  ASSERT_TRUE(removed) << removed.error().message;
  EXPECT_FALSE(removed->succeeded);
  EXPECT_EQ(raw->Range(key)->kvs.size(), 1u);
  remove.compares[0].number = raw->Range(key)->kvs[0].mod_revision;
  removed = raw->Txn(remove);
  ASSERT_TRUE(removed) << removed.error().message;
  EXPECT_TRUE(removed->succeeded);
  EXPECT_TRUE(raw->Range(key)->kvs.empty());
}

// The slot table reads past the node keys under the same prefix.
TEST_F(EtcdNodeReportsTest, NodeKeysAreNotSlots) {
  EtcdBackend backend(Client(), Prefix());
  const Record slot_2{{"BackendServerID", AttributeValue::Number(2)},
                      {"IPAddress", AttributeValue::String("10.0.0.2")},
                      {"BackendServerStatus", AttributeValue::String("enabled")}};
  const Record free_1{{"BackendServerID", AttributeValue::Number(1)},
                      {"BackendServerStatus", AttributeValue::String("disabled")}};
  ASSERT_TRUE(backend.Write(ConditionalWrite{.puts = {slot_2},
                                             .expected_generation = 0,
                                             .next_generation = 1,
                                             .overflow = 0,
                                             .free_record_1 = free_1}));
  auto before = backend.ReadAll();
  ASSERT_TRUE(before);
  EtcdNodeReports agent(Client(), Prefix());
  ASSERT_TRUE(agent.Report(Sample("a")));
  auto after = backend.ReadAll();
  ASSERT_TRUE(after);
  EXPECT_EQ(*after, *before);
}

TEST_F(EtcdNodeReportsTest, AnUnreachableStoreIsNotStoredAndCounted) {
  EtcdNodeReports agent(
      std::make_unique<EtcdClient>(
          ClientOptions{.endpoints = {"http://127.0.0.1:" + std::to_string(testing::FreePort())},
                        .request_timeout = 500ms}),
      Prefix());
  EXPECT_FALSE(agent.Report(Sample("a")));
  EXPECT_FALSE(agent.Report(Sample("a")));
  EXPECT_EQ(agent.log().unstored(), 2u);
}

}  // namespace
}  // namespace hsdo::etcd
