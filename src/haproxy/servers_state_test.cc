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
    "3 be 2 srv2 127.0.0.2 0 5 1 1 0 1 0 0 8 0 0 0 - 80 - 0 0 - - 0\n"
    "3 be 3 srv3 10.0.0.3 2 12 7 1 0 1 0 0 8 0 0 0 - 8080 - 0 0 - - 0\n"
    "3 be 4 srv4 ::1 0 1 0 1 0 1 0 0 8 0 0 0 - 80 - 0 0 - - 0\n";

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
                                        .weight = 5}));
  EXPECT_EQ((*servers)[1].admin, AdminState::kMaint);
  EXPECT_EQ((*servers)[2].admin, AdminState::kDrain);
  EXPECT_EQ((*servers)[2].port, 8080);
  EXPECT_EQ((*servers)[3].address, "::1");
  EXPECT_EQ((*servers)[3].weight, 0);
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

TEST(ParseServersState, RejectsMalformedLines) {
  EXPECT_FALSE(ParseServersState("1\n3 be 1 srv1 127.0.0.1 2 4 5\n").ok());
  EXPECT_FALSE(
      ParseServersState("1\n3 be x srv1 127.0.0.1 2 4 5 1 0 1 0 0 8 0 0 0 - 81 - 0 0 - - 0\n")
          .ok());
  EXPECT_FALSE(
      ParseServersState("1\n3 be 1 srv1 127.0.0.1 2 4 5 1 0 1 0 0 8 0 0 0 - 99999 - 0 0 - - 0\n")
          .ok());
}

}  // namespace
}  // namespace hsdo::haproxy
