#include "haproxy/servers_state.h"

#include <gtest/gtest.h>

namespace hsdo::haproxy {
namespace {

// Captured from HAProxy 2.6.12: srv1 was set ready with a new address, srv2 is the untouched
// `disabled` placeholder, srv3 drains, srv4 is an IPv6 server in maint.
constexpr std::string_view kReply =
    "1\n"
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health "
    "srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord "
    "srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n"
    "3 be 1 srv1 127.0.0.1 2 4 5 1 0 1 0 0 8 0 0 0 - 81 - 0 0 - - 0\n"
    "3 be 2 srv2 127.0.0.2 0 5 1 1 4242 1 0 0 8 0 0 0 - 80 - 0 0 - - 0\n"
    "3 be 3 srv3 10.0.0.3 2 12 7 1 0 1 0 0 8 0 0 0 - 8080 - 0 0 - - 0\n"
    "3 be 4 srv4 ::1 0 1 0 1 0 1 0 0 8 0 0 0 - 80 - 0 0 - - 0\n";

// Measured on 2.6.12: srv_check_port is 0 and srv_check_addr "-" unless `check port` or
// `check addr` (or `port`/`addr` on the server line) sends the check elsewhere than the
// server's address and port; such a check proves nothing of them.
TEST(ParseServersState, ACheckOfItsOwnPortOrAddressIsCheckedElsewhere) {
  const std::string head(kReply.substr(0, kReply.find("3 be 1")));
  auto servers = ParseServersState(
      head +
      "3 a 1 s1 127.0.0.1 2 0 1 1 0 6 3 4 6 0 0 0 - 9 - 0 0 - - 0\n"
      "3 b 1 s1 127.0.0.1 2 0 1 1 0 6 3 4 6 0 0 0 - 9 - 0 18080 - - 0\n"
      "3 c 1 s1 127.0.0.1 2 0 1 1 0 6 3 4 6 0 0 0 - 9 - 0 0 127.0.0.5 127.0.0.5 0\n"
      "3 d 1 s1 127.0.0.1 2 0 1 1 0 6 3 4 6 0 0 0 - 9 - 0 9 127.0.0.5 127.0.0.5 0\n");
  ASSERT_TRUE(servers.ok()) << servers.error().message;
  ASSERT_EQ(servers->size(), 4u);
  EXPECT_FALSE((*servers)[0].check_elsewhere);
  EXPECT_TRUE((*servers)[1].check_elsewhere);
  EXPECT_TRUE((*servers)[2].check_elsewhere);
  EXPECT_TRUE((*servers)[3].check_elsewhere);
}

TEST(ParseServersState, ReadsEveryServer) {
  auto servers = ParseServersState(kReply);
  ASSERT_TRUE(servers.ok()) << servers.error().message;
  ASSERT_EQ(servers->size(), 4u);
  EXPECT_EQ((*servers)[0], (ServerState{.backend_id = 3,
                                        .id = 1,
                                        .name = "srv1",
                                        .address = "127.0.0.1",
                                        .port = 81,
                                        .op_state = 2,
                                        .admin_bits = 4,
                                        .admin = AdminState::kReady,
                                        .weight = 5,
                                        .initial_weight = 1,
                                        .check_state = 8}));
  EXPECT_FALSE((*servers)[0].has_check());
  EXPECT_EQ((*servers)[1].admin, AdminState::kMaint);
  EXPECT_EQ((*servers)[1].since_change, 4242);  // srv_time_since_last_change
  EXPECT_EQ((*servers)[2].admin, AdminState::kDrain);
  EXPECT_EQ((*servers)[2].port, 8080);
  EXPECT_EQ((*servers)[3].address, "::1");
  EXPECT_EQ((*servers)[3].weight, 0);
}

// Found by fuzzing: values HAProxy never prints were taken (a negative admin state read as
// maint, an id of 0): a garbled reply is refused, and the agent keeps what it knew.
TEST(ParseServersState, NumbersHaproxyNeverPrintsAreRefused) {
  const std::string good = "2 be 1 srv1 127.0.0.1 2 0 1 1 0 1 0 2 6 0 0 0 - 45203 - 0 0 - - 0";
  ASSERT_TRUE(ParseServersState("1\n" + good + "\n").ok());
  for (const char* line : {"2 be 1 srv1 127.0.0.1 2 -4 1 1 0 1 0 2 6 0 0 0 - 45203 - 0 0 - - 0",
                           "2 be 1 srv1 127.0.0.1 -2 0 1 1 0 1 0 2 6 0 0 0 - 45203 - 0 0 - - 0",
                           "2 be 0 srv1 127.0.0.1 2 0 1 1 0 1 0 2 6 0 0 0 - 45203 - 0 0 - - 0",
                           "0 be 1 srv1 127.0.0.1 2 0 1 1 0 1 0 2 6 0 0 0 - 45203 - 0 0 - - 0",
                           "2 be 1 srv1 127.0.0.1 2 0 1 1 0 1 0 2 -6 0 0 0 - 45203 - 0 0 - - 0",
                           "2 be 1 srv1 127.0.0.1 2 0 1 1 0 1 0 2 6 -1 0 0 - 45203 - 0 0 - - 0"}) {
    EXPECT_FALSE(ParseServersState(std::string("1\n") + line + "\n").ok()) << line;
  }
}

// Measured on HAProxy 2.6.12 (`option httpchk`, inter 1s rise 2 fall 2): a slot just set ready
// (UP before any check), one whose check passed, one forced `health down` at a new address.
TEST(ParseServersState, ReadsTheHealthCheck) {
  constexpr std::string_view kChecked =
      "1\n# header\n"
      "2 be 1 srv1 127.0.0.1 2 4 0 1 0 1 0 2 6 0 0 0 - 45203 - 0 0 - - 0\n"
      "2 be 2 srv2 127.0.0.1 2 4 0 1 0 15 3 3 6 0 0 0 - 45204 - 0 0 - - 0\n"
      "2 be 3 srv3 127.0.0.1 0 4 0 1 0 15 0 0 6 0 0 0 - 45205 - 0 0 - - 0\n";
  auto servers = ParseServersState(kChecked);
  ASSERT_TRUE(servers.ok()) << servers.error().message;
  EXPECT_TRUE((*servers)[0].has_check());
  EXPECT_FALSE((*servers)[0].check_passed());  // UP, but no check has run
  EXPECT_TRUE((*servers)[1].check_passed());
  EXPECT_EQ((*servers)[1].check_health, 3);
  EXPECT_FALSE((*servers)[2].check_passed());
}

TEST(ParseStatSessions, ReadsScurByServerName) {
  const auto sessions = ParseStatSessions(
      "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin\n"
      "be,srv1,0,0,3,5,,9,0\n"
      "be,srv2,0,0,0,0,,0,0\n\n",
      "be");
  ASSERT_TRUE(sessions.ok()) << sessions.error().message;
  EXPECT_EQ(*sessions, (std::map<std::string, int>{{"srv1", 3}, {"srv2", 0}}));
  EXPECT_FALSE(ParseStatSessions("Unknown command.", "be").ok());
  EXPECT_FALSE(ParseStatSessions("# pxname,svname,scur\nbe,srv1,x\n", "be").ok());
  // Found by fuzzing: a negative count was taken (HAProxy's is never negative).
  EXPECT_FALSE(ParseStatSessions("# pxname,svname,scur\nbe,srv1,-1\n", "be").ok());
  EXPECT_FALSE(ParseStatSessions("# svname,scur\nsrv1,3\n", "be").ok());
  EXPECT_EQ(ShowStatServersCommand("be"), "show stat be 4 -1");
  EXPECT_EQ(ShowStatServersCommand("be", 7), "show stat 7 4 -1");
}

// HAProxy finds `show stat <name>` as the first proxy of that name: with `frontend app`
// declared before `backend app`, the frontend, which has no servers (measured on 2.6.12).
// Rows of another proxy than the backend asked for are not its sessions.
TEST(ParseStatSessions, RowsOfAnotherProxyAreAnError) {
  const auto other = ParseStatSessions("# pxname,svname,qcur,qmax,scur\nother,srv1,0,0,0\n", "be");
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.error().message.find("another proxy"), std::string::npos);
  const auto header_only = ParseStatSessions("# pxname,svname,qcur,qmax,scur\n\n", "be");
  ASSERT_TRUE(header_only.ok());
  EXPECT_TRUE(header_only->empty());
}

TEST(ParseShowInfo, ReadsPidAndStartTime) {
  const auto identity = ParseShowInfo(
      "Name: HAProxy\nVersion: 2.6.12\nPid: 9245\nUptime: 0d 0h00m00s\nUptime_sec: 0\n"
      "Start_time_sec: 1796047102\nMemmax_MB: 0");
  ASSERT_TRUE(identity.ok());
  EXPECT_EQ(identity->pid, "9245");
  EXPECT_EQ(identity->start_time, "1796047102");
  EXPECT_FALSE(ParseShowInfo("Unknown command.").ok());
  EXPECT_EQ(ParseShowInfo("Pid: 7")->start_time, "");
}

TEST(AdminStateFromBits, MaintWinsOverDrainAndCmaintIsReady) {
  EXPECT_EQ(AdminStateFromBits(0), AdminState::kReady);
  EXPECT_EQ(AdminStateFromBits(0x04), AdminState::kReady);  // `disabled` then `state ready`
  EXPECT_EQ(AdminStateFromBits(0x05), AdminState::kMaint);
  EXPECT_EQ(AdminStateFromBits(0x02), AdminState::kMaint);
  EXPECT_EQ(AdminStateFromBits(0x20), AdminState::kMaint);
  EXPECT_EQ(AdminStateFromBits(0x08), AdminState::kDrain);
  EXPECT_EQ(AdminStateFromBits(0x10), AdminState::kDrain);
  EXPECT_EQ(AdminStateFromBits(0x09), AdminState::kMaint);
}

TEST(ParseServersState, RejectsOtherFormatVersions) {
  auto parsed = ParseServersState("2\n# be_id ...\n3 be 1 srv1\n");
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().message.find("format version '2'"), std::string::npos);
}

TEST(ParseServersState, MissingBackendAndEmptyReplies) {
  auto missing = ParseServersState("Can't find backend.\n");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
  EXPECT_FALSE(ParseServersState("").ok());
  auto no_servers = ParseServersState("1\n# be_id be_name\n");
  ASSERT_FALSE(no_servers.ok());
  EXPECT_NE(no_servers.error().message.find("no servers"), std::string::npos);
}

// Found in review: exactly 25 columns were required. Format version 1 grew at its end before
// (2.0 to 2.4) without a new number; a later HAProxy adding one more column failed every read.
TEST(ParseServersState, ReadsColumnsAddedAfterTheKnownOnes) {
  auto servers =
      ParseServersState("1\n3 be 1 srv1 127.0.0.1 2 4 5 1 0 1 0 0 8 0 0 0 - 81 - 0 0 - - 0 x 7\n");
  ASSERT_TRUE(servers.ok()) << servers.error().message;
  EXPECT_EQ(servers->front().address, "127.0.0.1");
  EXPECT_EQ(servers->front().port, 81);
}

TEST(ParseServersState, RejectsMalformedLines) {
  EXPECT_FALSE(ParseServersState("1\n3 be 1 srv1 127.0.0.1 2 4 5\n").ok());
  EXPECT_FALSE(
      ParseServersState("1\n3 be x srv1 127.0.0.1 2 4 5 1 0 1 0 0 8 0 0 0 - 81 - 0 0 - - 0\n")
          .ok());
  EXPECT_FALSE(
      ParseServersState("1\n3 be 1 srv1 127.0.0.1 2 4 5 1 0 1 0 0 8 0 0 0 - 99999 - 0 0 - - 0\n")
          .ok());
  // Weights outside HAProxy's 0-256 (srv_iweight goes into `set server ... weight` with a static
  // algorithm).
  EXPECT_FALSE(
      ParseServersState("1\n3 be 1 srv1 127.0.0.1 2 4 5 300 0 1 0 0 8 0 0 0 - 81 - 0 0 - - 0\n")
          .ok());
  EXPECT_FALSE(
      ParseServersState("1\n3 be 1 srv1 127.0.0.1 2 4 -1 1 0 1 0 0 8 0 0 0 - 81 - 0 0 - - 0\n")
          .ok());
  EXPECT_TRUE(
      ParseServersState("1\n3 be 1 srv1 127.0.0.1 2 4 256 0 0 1 0 0 8 0 0 0 - 81 - 0 0 - - 0\n")
          .ok());
}

}  // namespace
TEST(ShowInfoUptime, SecondsOnHaproxysOwnClock) {
  // HAProxy 2.6.12's lines, as measured.
  EXPECT_EQ(ShowInfoUptime("Pid: 17181\nUptime: 0d 0h00m02s\nUptime_sec: 2\nStart_time_sec: 1"),
            std::chrono::seconds{2});
  EXPECT_EQ(ShowInfoUptime("Pid: 7\nUptime_sec: 86400"), std::chrono::seconds{86400});
  for (const char* reply :
       {"Pid: 7", "Uptime_sec: ", "Uptime_sec: -1", "Uptime_sec: 2s", "Uptime: 0d 0h00m02s"}) {
    EXPECT_EQ(ShowInfoUptime(reply), std::nullopt) << reply;
  }
}

TEST(ShowInfoSaysStopping, OnlyAProcessOnItsWayOut) {
  EXPECT_FALSE(ShowInfoSaysStopping("Name: HAProxy\nPid: 7\nStopping: 0\nJobs: 3"));
  EXPECT_TRUE(ShowInfoSaysStopping("Name: HAProxy\nPid: 7\nStopping: 1\nJobs: 3"));
  EXPECT_TRUE(ShowInfoSaysStopping("Stopping: 1\n"));
  EXPECT_FALSE(ShowInfoSaysStopping("Stopping: 10\n"));
  EXPECT_FALSE(ShowInfoSaysStopping("Name: HAProxy\nPid: 7"));  // older versions: no such line
}

}  // namespace hsdo::haproxy
