#include "haproxy/runtime_api.h"

#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "haproxy/fake_haproxy.h"

namespace hsdo::haproxy {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(SocketEndpoint, ParsesHaproxyAddressForms) {
  auto unix_path = SocketEndpoint::Parse("/run/haproxy/admin.sock");
  ASSERT_TRUE(unix_path.ok());
  EXPECT_EQ(unix_path->kind, SocketEndpoint::Kind::kUnix);
  EXPECT_EQ(unix_path->path, "/run/haproxy/admin.sock");
  EXPECT_EQ(SocketEndpoint::Parse("unix@/tmp/s")->path, "/tmp/s");
  auto v4 = SocketEndpoint::Parse("ipv4@127.0.0.1:9999");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->kind, SocketEndpoint::Kind::kIpv4);
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, 9999);
  auto v6 = SocketEndpoint::Parse("ipv6@[::1]:9998");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->ToString(), "ipv6@[::1]:9998");
  for (const char* bad :
       {"", "ipv4@127.0.0.1", "ipv4@localhost:1", "ipv4@127.0.0.1:0", "ipv4@::1:80", "ipv6@::1:80",
        "ipv6@[::1]", "ipv6@[127.0.0.1]:80", "ipv4@1.2.3.4:70000"}) {
    EXPECT_FALSE(SocketEndpoint::Parse(bad).ok()) << bad;
  }
}

TEST(SplitPromptReplies, OneReplyPerCommand) {
  // `prompt`, then: an empty reply, an addr reply, a two-line reply, an empty reply.
  const std::string output =
      "\n> \n> IP changed from 'a' to 'b' by 'stats socket command'\n\n> 1\n# header\n\n> \n> ";
  auto replies = SplitPromptReplies(output, 4);
  ASSERT_TRUE(replies.ok()) << replies.error().message;
  EXPECT_THAT(*replies, ElementsAre("", "IP changed from 'a' to 'b' by 'stats socket command'",
                                    "1\n# header", ""));
  EXPECT_FALSE(SplitPromptReplies(output, 5).ok());
  EXPECT_FALSE(SplitPromptReplies("", 1).ok());
}

TEST(KindOf, Commands) {
  EXPECT_EQ(KindOf("set server be/s1 addr 1.2.3.4 port 80"), CommandKind::kAddr);
  EXPECT_EQ(KindOf("set server be/s1 weight 3"), CommandKind::kWeight);
  EXPECT_EQ(KindOf("set server be/s1 state ready"), CommandKind::kState);
  EXPECT_EQ(KindOf("show servers state be"), CommandKind::kOther);
}

TEST(ReplyError, HaproxyRepliesByKind) {
  EXPECT_FALSE(ReplyError(CommandKind::kWeight, "").has_value());
  EXPECT_FALSE(ReplyError(CommandKind::kState, "").has_value());
  EXPECT_FALSE(ReplyError(CommandKind::kAddr,
                          "IP changed from '127.0.0.2' to '127.0.0.1', port changed from '80' to "
                          "'9001' by 'stats socket command'")
                   .has_value());
  EXPECT_FALSE(ReplyError(CommandKind::kAddr,
                          "no need to change the addr, port changed from '81' to '82' by 'stats "
                          "socket command'")
                   .has_value());
  EXPECT_FALSE(ReplyError(CommandKind::kAddr,
                          "no need to change the addr, no need to change the port by 'stats "
                          "socket command'")
                   .has_value());
  // HAProxy 3.0 and later name only what changed, and say when nothing did (found in review:
  // read as refusals, a port-only move put every server it touched in maint for a cycle).
  EXPECT_FALSE(ReplyError(CommandKind::kAddr,
                          "port changed from '18081' to '18082' by 'stats socket command'")
                   .has_value());
  EXPECT_FALSE(ReplyError(CommandKind::kAddr, "nothing changed").has_value());
  EXPECT_EQ(ReplyError(CommandKind::kWeight, "No such server."), "No such server.");
  EXPECT_EQ(ReplyError(CommandKind::kState, "No such backend."), "No such backend.");
  EXPECT_TRUE(ReplyError(CommandKind::kState,
                         "'set server <srv> state' expects 'ready', 'drain' and 'maint'.")
                  .has_value());
  EXPECT_TRUE(
      ReplyError(CommandKind::kWeight, "Absolute weight can only be between 0 and 256 inclusive.")
          .has_value());
  EXPECT_TRUE(ReplyError(CommandKind::kAddr, "Invalid addr '1.2.3.4.5' by 'stats socket command'")
                  .has_value());
  EXPECT_TRUE(ReplyError(CommandKind::kAddr, "").has_value());
  EXPECT_TRUE(ReplyError(CommandKind::kWeight, "Require 'operator' level or higher.").has_value());
  EXPECT_EQ(ReplyError(CommandKind::kState,
                       "Unknown command, but maybe one of the following ones is a better match:\n"
                       "  help : list"),
            "Unknown command, but maybe one of the following ones is a better match:");
}

// A stand-in for HAProxy's CLI in prompt mode, on a unix socket: it answers each command with
// "ok<n>" and reads slowly, so a long batch only completes if the client reads while it writes.
// `;`-separated commands are answered as HAProxy 3.2 does: the prompt only after the last.
class PromptServer {
 public:
  // kSlowReader: reads whatever has arrived every few ms, and counts the commands it holds
  // unanswered at once (max_unanswered). kFlood: sends without end (not HAProxy), counted
  // in flooded().
  // kLargeReplies: answers each command with 30 MiB.
  enum class Mode { kAnswer, kSilent, kCloseEarly, kMaster, kSlowReader, kFlood, kLargeReplies };
  explicit PromptServer(Mode mode) : mode_(mode) {
    char dir_template[] = "/tmp/hsdo-rt-XXXXXX";
    dir_ = ::mkdtemp(dir_template);
    path_ = dir_ + "/s.sock";
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(listen_fd_, 4), 0);
    thread_ = std::thread([this] { Serve(); });
  }
  ~PromptServer() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    ::close(listen_fd_);
    thread_.join();
    std::filesystem::remove_all(dir_);
  }
  const std::string& path() const { return path_; }
  std::size_t longest_line() const { return longest_line_; }
  std::size_t max_unanswered() const { return max_unanswered_; }
  int connections() const { return connections_; }
  std::size_t flooded() const { return flooded_; }
  // Closes the client's connection, as HAProxy does after its idle timeout.
  void CloseClient() { ::shutdown(client_fd_.load(), SHUT_RDWR); }

 private:
  // One client at a time, one after the other.
  void Serve() {
    for (;;) {
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) return;
      ++connections_;
      client_fd_ = fd;
      ServeClient(fd);
      client_fd_ = -1;
      ::close(fd);
    }
  }

  void ServeClient(int fd) {
    if (mode_ == Mode::kFlood) {
      const std::string block(1 << 16, 'x');
      while (flooded_ < (std::size_t{1} << 30)) {
        const ssize_t w = ::send(fd, block.data(), block.size(), MSG_NOSIGNAL);
        if (w <= 0) return;
        flooded_ += static_cast<std::size_t>(w);
      }
      return;
    }
    std::string pending;
    char buffer[512];  // small reads: the client must keep draining replies
    std::vector<char> big(1 << 20);
    int counter = 0;
    bool quit = false;
    while (!quit) {
      const bool slow = mode_ == Mode::kSlowReader;
      if (slow) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      const ssize_t n =
          slow ? ::read(fd, big.data(), big.size()) : ::read(fd, buffer, sizeof(buffer));
      if (n <= 0) break;
      pending.append(slow ? big.data() : buffer, static_cast<std::size_t>(n));
      max_unanswered_ = std::max<std::size_t>(
          max_unanswered_,
          static_cast<std::size_t>(std::count(pending.begin(), pending.end(), '\n')));
      std::size_t newline;
      while (!quit && (newline = pending.find('\n')) != std::string::npos) {
        std::string line = pending.substr(0, newline);
        pending.erase(0, newline + 1);
        longest_line_ = std::max<std::size_t>(longest_line_, line.size());
        if (mode_ == Mode::kSilent) continue;
        if (mode_ == Mode::kMaster) {  // as HAProxy 2.6's master CLI answers
          // After a failed reload, in expert mode (HAProxy 2.6-3.3's pcli_write_prompt).
          const std::string out = line == "prompt" ? "master[ReloadFailed](e)> "
                                                   : "Unknown command\n\nmaster[ReloadFailed](e)> ";
          (void)!::write(fd, out.data(), out.size());
          continue;
        }
        if (mode_ == Mode::kCloseEarly && counter > 3) {
          quit = true;
          break;
        }
        std::string out;
        std::size_t start = 0;
        while (start <= line.size()) {
          auto end = line.find(';', start);
          if (end == std::string::npos) end = line.size();
          const std::string command = line.substr(start, end - start);
          if (command == "quit") {
            quit = true;
            break;
          }
          const bool last = end == line.size();
          if (mode_ == Mode::kLargeReplies && command != "prompt") {
            out += std::string((std::size_t{30} << 20) - 1, 'x') + "\n\n";
            ++counter;
          } else {
            out += command == "prompt" ? "\n" : "ok" + std::to_string(counter++) + "\n\n";
          }
          if (last) out += "> ";
          start = end + 1;
        }
        std::size_t sent = 0;
        while (sent < out.size()) {
          const ssize_t w = ::write(fd, out.data() + sent, out.size() - sent);
          if (w <= 0) break;
          sent += static_cast<std::size_t>(w);
        }
      }
    }
  }

  Mode mode_;
  std::string dir_;
  std::string path_;
  int listen_fd_ = -1;
  std::atomic<std::size_t> longest_line_{0};
  std::atomic<std::size_t> max_unanswered_{0};
  std::atomic<int> connections_{0};
  std::atomic<std::size_t> flooded_{0};
  std::atomic<int> client_fd_{-1};
  std::thread thread_;
};

TEST(SocketRuntimeApi, StreamsALargeBatchInOneConnection) {
  PromptServer server(PromptServer::Mode::kAnswer);
  SocketRuntimeApi api(*SocketEndpoint::Parse(server.path()));
  std::vector<std::string> commands;
  for (int i = 0; i < 20000; ++i) {
    commands.push_back("set server backend_with_a_long_name/slot" + std::to_string(i) +
                       " addr 10.0.0.1 port 8080");
  }
  auto replies = api.Execute(commands);
  ASSERT_TRUE(replies.ok()) << replies.error().message;
  ASSERT_EQ(replies->size(), commands.size());
  EXPECT_EQ(replies->front(), "ok0");
  EXPECT_EQ(replies->back(), "ok19999");
}

// Found in review: commands went `;`-joined, 100 per line. HAProxy 3.2 prompts only after the
// last command of a line, so the agent waited for prompts that never came: it timed out on its
// first batch, for ever, and applied nothing. One command per line gets one prompt each, in
// every version (and keeps lines far below HAProxy's 16 KB buffer).
TEST(SocketRuntimeApi, EachCommandIsALineOfItsOwn) {
  PromptServer server(PromptServer::Mode::kAnswer);
  SocketRuntimeApi api(*SocketEndpoint::Parse(server.path()),
                       {.io_timeout = std::chrono::milliseconds(2000)});
  const std::string command = "set server " + std::string(64, 'b') + "/" + std::string(64, 's') +
                              " addr 2001:db8:1234:5678:9abc:def0:1234:5678 port 65535";
  auto replies = api.Execute(std::vector<std::string>(300, command));
  ASSERT_TRUE(replies.ok()) << replies.error().message;
  EXPECT_EQ(replies->size(), 300u);
  EXPECT_EQ(replies->back(), "ok299");
  EXPECT_EQ(server.longest_line(), command.size());
}

// Found in review: a full apply's 6000 commands went pipelined at once, on which HAProxy
// 3.2.0's CLI aborts the whole process ("A bogus APPCTX is spinning"). At most 100 commands
// are sent ahead of their replies now.
TEST(SocketRuntimeApi, SendsAtMostAHundredCommandsAheadOfTheReplies) {
  PromptServer server(PromptServer::Mode::kSlowReader);
  SocketRuntimeApi api(*SocketEndpoint::Parse(server.path()), {.keep_open = true});
  auto replies = api.Execute(std::vector<std::string>(3000, "set server be/srv1 weight 1"));
  ASSERT_TRUE(replies.ok()) << replies.error().message;
  EXPECT_EQ(replies->size(), 3000u);
  EXPECT_GT(server.max_unanswered(), 1u);    // pipelined still
  EXPECT_LE(server.max_unanswered(), 101u);  // `prompt` and 100 commands
}

TEST(SocketRuntimeApi, TimesOutWhenHaproxyDoesNotAnswer) {
  PromptServer server(PromptServer::Mode::kSilent);
  SocketRuntimeApi api(*SocketEndpoint::Parse(server.path()),
                       {.io_timeout = std::chrono::milliseconds(200)});
  auto replies = api.Execute({"show info"});
  ASSERT_FALSE(replies.ok());
  EXPECT_EQ(replies.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(replies.error().message.find("timed out"), std::string::npos);
}

// Found in review: pointed at the master CLI, the agent waited for ever on "timed out".
TEST(SocketRuntimeApi, TheMasterCliIsNamed) {
  PromptServer server(PromptServer::Mode::kMaster);
  SocketRuntimeApi api(*SocketEndpoint::Parse(server.path()),
                       {.io_timeout = std::chrono::milliseconds(200)});
  auto replies = api.Execute({"show servers state be", "expert-mode off"});
  ASSERT_FALSE(replies.ok());
  EXPECT_EQ(replies.error().code, ErrorCode::kInvalidArgument);  // the agent exits 2 on it
  EXPECT_NE(replies.error().message.find("master CLI"), std::string::npos)
      << replies.error().message;
}

// Found in review: a HAPROXY_SOCKET_PATH naming a peer that sends without end took the agent
// to 2 GB in 5 s (every read reset the timeout), and SIGTERM did not stop it.
TEST(SocketRuntimeApi, AReplyWithoutEndIsCutAtTheLimit) {
  PromptServer server(PromptServer::Mode::kFlood);
  SocketRuntimeApi api(*SocketEndpoint::Parse(server.path()), {.keep_open = true});
  auto replies = api.Execute({"show info"});
  ASSERT_FALSE(replies.ok());
  EXPECT_EQ(replies.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(replies.error().message.find("more than 64 MiB to one command"), std::string::npos)
      << replies.error().message;
  EXPECT_LT(server.flooded(), std::size_t{128} << 20);
}

// Review of the first version, a cap on the whole batch: a full read of several large
// backends (and their `show stat` while a slot drains) went over it together.
TEST(SocketRuntimeApi, TheLimitIsPerReply) {
  PromptServer server(PromptServer::Mode::kLargeReplies);
  SocketRuntimeApi api(*SocketEndpoint::Parse(server.path()), {.keep_open = true});
  auto replies = api.Execute(
      {"show servers state a", "show servers state b", "show servers state c"});  // 3 x 30 MiB
  ASSERT_TRUE(replies.ok()) << replies.error().message;
  ASSERT_EQ(replies->size(), 3u);
  EXPECT_EQ(replies->back().size(), (std::size_t{30} << 20) - 1);
}

TEST(SocketRuntimeApi, ConnectionClosedEarlyIsAnError) {
  PromptServer server(PromptServer::Mode::kCloseEarly);
  SocketRuntimeApi api(*SocketEndpoint::Parse(server.path()));
  auto replies = api.Execute({"a", "b", "c", "d", "e", "f", "g"});
  ASSERT_FALSE(replies.ok());
  EXPECT_EQ(replies.error().code, ErrorCode::kUnavailable);
}

// The agent's connection: kept from batch to batch (prompt mode, no `quit`), replaced when
// HAProxy closed it in between, and dropped on Reset() (a reload).
TEST(SocketRuntimeApi, KeepsOneConnectionOpenAcrossBatches) {
  PromptServer server(PromptServer::Mode::kAnswer);
  SocketRuntimeApi api(*SocketEndpoint::Parse(server.path()), {.keep_open = true});
  for (int i = 0; i < 3; ++i) {
    auto replies = api.Execute({"show info", "show servers state"});
    ASSERT_TRUE(replies.ok()) << replies.error().message;
    EXPECT_EQ(*replies, (std::vector<std::string>{"ok" + std::to_string(2 * i),
                                                  "ok" + std::to_string(2 * i + 1)}));
  }
  EXPECT_EQ(api.connections(), 1);
  EXPECT_EQ(server.connections(), 1);

  server.CloseClient();  // HAProxy's idle timeout
  auto replies = api.Execute({"show info"});
  ASSERT_TRUE(replies.ok()) << replies.error().message;
  EXPECT_EQ(*replies, std::vector<std::string>{"ok0"});  // a new session's first reply
  EXPECT_EQ(api.connections(), 2);

  api.Reset();
  replies = api.Execute({"show info"});
  ASSERT_TRUE(replies.ok()) << replies.error().message;
  EXPECT_EQ(api.connections(), 3);
  EXPECT_EQ(server.connections(), 3);
}

TEST(SocketRuntimeApi, WithoutKeepOpenEveryBatchHasItsConnection) {
  PromptServer server(PromptServer::Mode::kAnswer);
  SocketRuntimeApi api(*SocketEndpoint::Parse(server.path()));
  ASSERT_TRUE(api.Execute({"show info"}).ok());
  ASSERT_TRUE(api.Execute({"show info"}).ok());
  EXPECT_EQ(server.connections(), 2);
}

TEST(SocketRuntimeApi, NoSocketIsUnavailable) {
  SocketRuntimeApi api(*SocketEndpoint::Parse("/tmp/hsdo-no-such-dir/s.sock"));
  auto replies = api.Execute({"show info"});
  ASSERT_FALSE(replies.ok());
  EXPECT_EQ(replies.error().code, ErrorCode::kUnavailable);
}

// Found in review: an agent left out of the socket's group waited forever behind one line
// ("connect ...: Permission denied") that did not say what to change.
TEST(SocketRuntimeApi, ASocketThisUserMayNotUseSaysWhatToChange) {
  char dir_template[] = "/tmp/hsdo-eacces-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  const std::string path = dir + "/admin.sock";
  const int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  ::chmod(dir.c_str(), 0755);
  ::chmod(path.c_str(), 0);  // nobody but root may connect
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const pid_t child = ::fork();
  if (child == 0) {
    // Root connects whatever the mode: the child drops to nobody first.
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(3);
    SocketRuntimeApi api(*SocketEndpoint::Parse(path));
    auto replies = api.Execute({"show info"});
    const std::string message = replies ? "connected" : replies.error().message;
    (void)!::write(out[1], message.data(), message.size());
    ::_exit(0);
  }
  ::close(out[1]);
  std::string message;
  char buffer[512];
  for (ssize_t n; (n = ::read(out[0], buffer, sizeof(buffer))) > 0;) {
    message.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(out[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  ::close(listener);
  std::filesystem::remove_all(dir);
  EXPECT_THAT(message, ::testing::HasSubstr("Permission denied"));
  EXPECT_THAT(message, ::testing::HasSubstr("mode 660 group haproxy"));
}

TEST(SocketRuntimeApi, RefusesCommandsWithSeparators) {
  SocketRuntimeApi api(*SocketEndpoint::Parse("/tmp/hsdo-no-such-dir/s.sock"));
  auto replies = api.Execute({"set server be/s1 weight 1; shutdown sessions server be/s1"});
  ASSERT_FALSE(replies.ok());
  EXPECT_EQ(replies.error().code, ErrorCode::kInvalidArgument);
}

// HAProxy refuses `addr` for a server of `init-addr none` (HAPROXY-FACTS.md). Sent in one batch,
// the `weight` and `state ready` after it would make that server serve with no address (measured
// on 2.6.12: 503 after the 3 s connect retries for every request hashed to it).
TEST(ApplyAddressesFirst, AServerWhoseAddressIsRefusedIsPutInMaintInstead) {
  FakeHaproxy haproxy;
  haproxy.AddBackend("be", "srv", 3);
  haproxy.server("be", "srv2").address = "-";
  haproxy.server("be", "srv3").admin = AdminState::kReady;
  haproxy.server("be", "srv3").admin_bits = 0;
  const std::vector<Operation> plan = {
      Operation::SetAddr("be", "srv1", 1, "10.0.0.1", 8080),
      Operation::SetWeight("be", "srv1", 1, 5),
      Operation::SetState("be", "srv1", 1, AdminState::kReady),
      Operation::SetAddr("be", "srv2", 2, "10.0.0.2", 8080),
      Operation::SetWeight("be", "srv2", 2, 5),
      Operation::SetState("be", "srv2", 2, AdminState::kReady),
      Operation::SetWeight("be", "srv3", 3, 7),
  };
  auto applied = ApplyAddressesFirst(haproxy, plan);
  ASSERT_TRUE(applied.ok()) << applied.error().message;
  EXPECT_EQ(haproxy.apply_count(), 2);
  EXPECT_EQ(haproxy.server("be", "srv1").admin, AdminState::kReady);
  EXPECT_EQ(haproxy.server("be", "srv1").address, "10.0.0.1");
  EXPECT_EQ(haproxy.server("be", "srv2").admin, AdminState::kMaint);
  EXPECT_EQ(haproxy.server("be", "srv2").weight, 1);
  EXPECT_EQ(haproxy.server("be", "srv3").weight, 7);
  // The addresses first; then what follows a taken address, the rest, and maint where refused.
  EXPECT_THAT(haproxy.received(),
              ElementsAre("set server be/srv1 addr 10.0.0.1 port 8080",
                          "set server be/srv2 addr 10.0.0.2 port 8080",
                          "set server be/srv1 weight 5", "set server be/srv1 state ready",
                          "set server be/srv3 weight 7", "set server be/srv2 state maint"));
  ASSERT_EQ(applied->operations.size(), applied->replies.size());
  ASSERT_EQ(applied->operations.size(), 6u);
  EXPECT_EQ(Render(applied->operations[1]), "set server be/srv2 addr 10.0.0.2 port 8080");
  EXPECT_TRUE(ReplyError(CommandKind::kAddr, applied->replies[1]).has_value());
  EXPECT_EQ(Render(applied->operations[5]), "set server be/srv2 state maint");
}

TEST(ApplyAddressesFirst, WithoutAnAddressOneBatch) {
  FakeHaproxy haproxy;
  haproxy.AddBackend("be", "srv", 2);
  const std::vector<Operation> plan = {Operation::SetWeight("be", "srv1", 1, 5),
                                       Operation::SetState("be", "srv2", 2, AdminState::kDrain)};
  auto applied = ApplyAddressesFirst(haproxy, plan);
  ASSERT_TRUE(applied.ok());
  EXPECT_EQ(applied->operations, plan);
  EXPECT_EQ(haproxy.apply_count(), 1);
  EXPECT_THAT(haproxy.received(),
              ElementsAre("set server be/srv1 weight 5", "set server be/srv2 state drain"));
}

TEST(IsPermissionDenied, HaproxyRepliesBelowLevelAdmin) {
  // HAProxy 2.6 at `level operator` and `user` (the reply ends with an empty line).
  EXPECT_TRUE(IsPermissionDenied("Permission denied\n"));
  EXPECT_FALSE(IsPermissionDenied(""));  // `level admin`
  EXPECT_FALSE(IsPermissionDenied("No such server."));
}

// After a reload, the agent asks whether the replaced process still runs (it may serve sessions
// of draining slots): kill(pid, 0) through a UNIX socket, on a pid `show info` gave.
TEST(SocketRuntimeApi, ProcessMayRunFindsALiveProcessOnly) {
  const SocketRuntimeApi api(*SocketEndpoint::Parse("/run/haproxy/admin.sock"));
  // This test's own process runs, but is not HAProxy: its pid is another program's.
  EXPECT_FALSE(api.ProcessMayRun(std::to_string(::getpid())));
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t haproxy = ::fork();
  if (haproxy == 0) {
    ::prctl(PR_SET_NAME, "haproxy");  // its comm, as HAProxy's
    (void)!::write(ready[1], "r", 1);
    ::pause();  // until killed
    ::_exit(0);
  }
  ASSERT_GT(haproxy, 0);
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1);
  ::close(ready[0]);
  ::close(ready[1]);
  EXPECT_TRUE(api.ProcessMayRun(std::to_string(haproxy)));
  ::kill(haproxy, SIGKILL);
  int status = 0;
  // Ended, not reaped yet (a zombie): it keeps its pid and name, and serves nothing. Found in a
  // chaos soak: a parent that never reaped its old HAProxy held every drain till its timeout.
  while (::waitid(P_PID, haproxy, nullptr, WEXITED | WNOWAIT) != 0 && errno == EINTR) {
  }
  EXPECT_FALSE(api.ProcessMayRun(std::to_string(haproxy)));
  ASSERT_EQ(::waitpid(haproxy, &status, 0), haproxy);
  EXPECT_FALSE(api.ProcessMayRun(std::to_string(haproxy)));
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_FALSE(api.ProcessMayRun(std::to_string(child)));  // ended and reaped
  for (const char* pid : {"", "abc", "12x", "-5", "0", "1", "99999999999"}) {
    EXPECT_FALSE(api.ProcessMayRun(pid)) << pid;
  }
  // Over TCP, the pid may be another host's.
  const SocketRuntimeApi tcp(*SocketEndpoint::Parse("ipv4@127.0.0.1:9999"));
  EXPECT_FALSE(tcp.ProcessMayRun("4242"));
}

// A reload names the processes it replaces after -sf (or -st) on the new process's command
// line: `haproxy -f h.cfg -sf 41 42`, and a master-worker's new worker (measured on 2.6.12:
// `haproxy -sf 4401 -x sockpair@3 -W -f h.cfg -db`).
TEST(ParseReplacedPids, ThePidsAfterSfOrSt) {
  using Args = std::vector<std::string>;
  using Pids = std::optional<std::vector<std::string>>;
  EXPECT_EQ(ParseReplacedPids(Args{"haproxy", "-sf", "4401", "-x", "sockpair@3", "-W"}),
            Pids(Args{"4401"}));
  EXPECT_EQ(ParseReplacedPids(Args{"haproxy", "-f", "h.cfg", "-sf", "41", "42"}),
            Pids(Args{"41", "42"}));
  EXPECT_EQ(ParseReplacedPids(Args{"haproxy", "-st", "7", "-f", "9"}), Pids(Args{"7"}));
  EXPECT_EQ(ParseReplacedPids(Args{"haproxy", "-W", "-f", "h.cfg", "-p", "12"}), Pids(Args{}));
  EXPECT_EQ(ParseReplacedPids(Args{"haproxy", "-sf", "12345678901"}), Pids(Args{}));
  // Listeners taken over from a process none names (stopped by a wrapper's own signal).
  EXPECT_EQ(ParseReplacedPids(Args{"haproxy", "-x", "/run/h.sock", "-f", "h.cfg"}), Pids());
}

TEST(SocketRuntimeApi, ReplacedAtStartReadsTheCommandLineOfAProcessOnThisHost) {
  const SocketRuntimeApi api(*SocketEndpoint::Parse("/run/haproxy/admin.sock"));
  // This test's own process was started with no -sf: it replaced none.
  const auto own = api.ReplacedAtStart(std::to_string(::getpid()));
  ASSERT_TRUE(own.has_value());
  EXPECT_THAT(*own, IsEmpty());
  EXPECT_FALSE(api.ReplacedAtStart("999999999").has_value());  // no such process
  const SocketRuntimeApi tcp(*SocketEndpoint::Parse("ipv4@127.0.0.1:9999"));
  EXPECT_FALSE(tcp.ReplacedAtStart(std::to_string(::getpid())).has_value());
}

}  // namespace
}  // namespace hsdo::haproxy
