// The HAProxy Runtime API (the stats socket at `level admin`), as the agent uses it: a batch of
// commands goes out in ONE connection and one reply comes back per command, in order.
// HAPROXY-FACTS.md: one connection per command costs 20x more than one batch, and a huge single
// line fails with EPIPE unless the client reads while it writes, so the socket client streams.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "haproxy/servers_state.h"

namespace hsdo::haproxy {

// The kinds of write command the agent sends, as counted in metrics.
enum class CommandKind { kAddr, kWeight, kState, kHealth, kOther };
std::string_view ToString(CommandKind kind);
CommandKind KindOf(std::string_view command);

// One typed write to one server, as the agent's plan produces it. Every value was validated
// when the plan was made (IsValidHaproxyName for the names, CanonicalIp for the address, ranges
// for the port and weight); Render() is the only place that turns an operation into text.
struct Operation {
  CommandKind kind = CommandKind::kOther;
  std::string backend;
  std::string server;  // <base_name><slot id>
  int slot_id = 0;
  std::string address;                    // kAddr: canonical IP literal
  int port = 0;                           // kAddr
  int weight = 0;                         // kWeight
  AdminState state = AdminState::kReady;  // kState
  // kHealth is always `health down`: the start of a health-gated admission (a server forced
  // down comes back UP only after `rise` passing checks at its current address).

  static Operation SetAddr(std::string backend, std::string server, int slot_id,
                           std::string address, int port);
  static Operation SetWeight(std::string backend, std::string server, int slot_id, int weight);
  static Operation SetState(std::string backend, std::string server, int slot_id, AdminState state);
  static Operation SetHealthDown(std::string backend, std::string server, int slot_id);
  bool operator==(const Operation&) const = default;
};

// The runtime API line of an operation: "set server be/srv3 addr 10.0.0.3 port 80",
// "... weight 10", "... state ready|drain|maint", "... health down".
std::string Render(const Operation& operation);

class RuntimeApi {
 public:
  virtual ~RuntimeApi() = default;

  // Sends `commands` (each one command, without separators or newlines) and returns one reply
  // per command, in order, without the trailing empty line. An error means the batch did not
  // complete (socket unreachable, timeout, connection closed early): some commands may have run.
  virtual Result<std::vector<std::string>> Execute(const std::vector<std::string>& commands) = 0;

  // Applies typed writes in one batch, one reply per operation. By default each is rendered
  // (Render) and sent with Execute; the in-memory fake applies them directly.
  virtual Result<std::vector<std::string>> Apply(std::span<const Operation> operations);

  // Closes a connection kept open between batches, if any: the next batch opens a new one.
  // For when the process at the other end is on its way out (a reload).
  virtual void Reset() {}

  // Whether the HAProxy process `pid` (as `show info` gives it) may still run: one replaced by a
  // reload serves the connections it accepted until they end, and its sessions are read from
  // no socket. False when this host cannot tell.
  virtual bool ProcessMayRun(std::string_view /*pid*/) const { return false; }
  // The processes HAProxy process `pid` replaced when it started: the pids after `-sf` or `-st`
  // on its command line, where a reload puts them (`haproxy -sf`, and a master-worker's master
  // for its new worker); none for a start that replaced nothing. nullopt when this host cannot
  // read it (a TCP socket, another PID namespace, /proc hidden from this user).
  virtual std::optional<std::vector<std::string>> ReplacedAtStart(std::string_view /*pid*/) const {
    return std::nullopt;
  }
};

// The pids after `-sf` / `-st` in HAProxy's command line (RuntimeApi::ReplacedAtStart);
// nullopt for listeners taken over (`-x`) from a process none names.
std::optional<std::vector<std::string>> ParseReplacedPids(std::span<const std::string> arguments);

// Where the stats socket is: HAPROXY_SOCKET_PATH as HAProxy writes addresses:
// "/run/haproxy/admin.sock", "unix@/path", "ipv4@127.0.0.1:9999" or "ipv6@[::1]:9999".
struct SocketEndpoint {
  enum class Kind { kUnix, kIpv4, kIpv6 };
  Kind kind = Kind::kUnix;
  std::string path;  // kUnix
  std::string host;  // kIpv4 / kIpv6: an address literal, without brackets
  std::uint16_t port = 0;

  static Result<SocketEndpoint> Parse(std::string_view text);
  std::string ToString() const;
};

struct SocketRuntimeApiOptions {
  std::chrono::milliseconds connect_timeout{2000};
  // The longest time without any progress (bytes written or read) before a batch fails.
  std::chrono::milliseconds io_timeout{5000};
  // Keeps the connection (in prompt mode) from one batch to the next instead of a new one per
  // batch: the agent's steady cycle is then one write and one read. A connection HAProxy
  // closed in between is replaced, and the batch sent again if nothing of it was answered.
  // The process that answers is the one that accepted the connection, even after a reload
  // started another: the caller calls Reset() when `show info` says `Stopping: 1`.
  bool keep_open = false;
};

// The production RuntimeApi: a new connection for every batch (or one kept open, with
// `keep_open`). The connection runs in `prompt` mode so that several lines share it; every
// command's reply is then followed by an empty line and a "> " prompt.
class SocketRuntimeApi final : public RuntimeApi {
 public:
  explicit SocketRuntimeApi(SocketEndpoint endpoint, SocketRuntimeApiOptions options = {});
  static Result<std::unique_ptr<SocketRuntimeApi>> Create(std::string_view endpoint,
                                                          SocketRuntimeApiOptions options = {});
  ~SocketRuntimeApi() override;
  SocketRuntimeApi(const SocketRuntimeApi&) = delete;
  SocketRuntimeApi& operator=(const SocketRuntimeApi&) = delete;

  Result<std::vector<std::string>> Execute(const std::vector<std::string>& commands) override;
  void Reset() override;
  // With a UNIX socket (HAProxy on this host): kill(pid, 0) finds the process (EPERM: it exists,
  // another user's) and /proc/<pid>/comm, when readable, is "haproxy". Over TCP: false.
  bool ProcessMayRun(std::string_view pid) const override;
  // With a UNIX socket: from /proc/<pid>/cmdline. Over TCP: nullopt.
  std::optional<std::vector<std::string>> ReplacedAtStart(std::string_view pid) const override;

  const SocketEndpoint& endpoint() const { return endpoint_; }
  // Connections opened so far (for tests).
  int connections() const { return connections_; }

 private:
  // One batch on a new or kept connection. `*answered` tells whether any byte came back.
  Result<std::vector<std::string>> Exchange(const std::vector<std::string>& commands,
                                            bool* answered);
  bool KeptConnectionAlive() const;

  SocketEndpoint endpoint_;
  SocketRuntimeApiOptions options_;
  int kept_fd_ = -1;  // the connection kept open between batches (keep_open), or -1
  int connections_ = 0;
};

// The probe for `level admin`, which every write needs: measured on HAProxy 2.6, "expert-mode
// off" is answered "Permission denied" at `level user` and `operator` and with an empty reply
// at `admin`, and it changes nothing but that connection's own CLI mode.
inline constexpr std::string_view kAdminLevelProbe = "expert-mode off";
// True when `reply` (to kAdminLevelProbe or any write) says the socket's level is too low.
bool IsPermissionDenied(std::string_view reply);

// Splits the raw output of a prompt-mode session (the reply to `prompt` first when
// `prompt_reply_first`, then the commands') into one reply per command. Exposed for tests.
// Errors when the output holds fewer replies than expected.
Result<std::vector<std::string>> SplitPromptReplies(std::string_view output,
                                                    std::size_t expected_commands,
                                                    bool prompt_reply_first = true);

// nullopt when `reply` is HAProxy's success reply for a command of `kind`; else the error text.
// Success: an empty reply for weight, state and health; "IP changed from ..." / "port changed from
// ..." / "no need to change ..." / "nothing changed" (3.0) for addr. Anything else (`No such
// server.`, `No such backend.`, `Invalid addr ...`, `... expects 'ready', 'drain' and 'maint'.`,
// `Absolute weight can only be between 0 and 256 inclusive.`, `Require 'operator' level ...`,
// `Unknown command ...`) is an error.
std::optional<std::string> ReplyError(CommandKind kind, std::string_view reply);

// What was sent to HAProxy, in order, and its reply to each.
struct AppliedOperations {
  std::vector<Operation> operations;
  std::vector<std::string> replies;
};

// Applies `operations` (a plan's, each server's in order) so that no server is made to serve
// after HAProxy refused its address: it would serve its previous address, one the table no
// longer holds, or none at all (`init-addr none`, HAPROXY-FACTS.md: every request hashed to it
// then waits for its connect timeout and fails). Without an `addr`, one batch, as Apply. With
// one, two: each server's operations up to its `addr` first; then the rest of a server's
// operations only if HAProxy took its address, else `state maint` for it instead. An error
// means a batch did not complete (the first may have been applied).
Result<AppliedOperations> ApplyAddressesFirst(RuntimeApi& api,
                                              std::span<const Operation> operations);

}  // namespace hsdo::haproxy
