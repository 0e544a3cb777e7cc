// FakeHaproxy: an in-memory HAProxy for tests. It answers the reads the agent uses (`show info`,
// `show servers state`, `show stat <backend> 4 -1`) and applies typed operations (Apply) with
// HAProxy's own reply texts, so that a plan can be applied and checked without a process. Health
// checks are modelled as HAProxy 2.6 runs them (measured, HAPROXY-FACTS.md): `state ready` makes
// a server UP before any check, `health down` makes it DOWN until the test passes its checks.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "haproxy/runtime_api.h"
#include "haproxy/servers_state.h"

namespace hsdo::haproxy {

// The first two lines of HAProxy 2.6's `show servers state <backend>` (version 1), as the
// fakes write them.
inline constexpr std::string_view kServersStateHeader =
    "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
    "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
    "srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr "
    "srv_agent_port";

class FakeHaproxy final : public RuntimeApi {
 public:
  // Adds a backend with `server-template <base> 1-<count> 127.0.0.2:<port> [check] disabled`.
  void AddBackend(const std::string& name, const std::string& base, int count, int port = 80,
                  bool check = false);
  // A frontend of that name declared before the backend of that name: `show stat <name>`
  // answers for the frontend, which has no servers (HAProxy takes the first proxy of a name).
  void AddFrontend(const std::string& name) { frontends_.insert(name); }
  // What a reload without a state file does: every server back to its placeholder, in maint,
  // in a new process (another Pid in `show info`, Uptime_sec 0). `old_process_lingers`: the
  // replaced process still serves its connections (ProcessMayRun) until EndOldProcesses.
  void Reload(bool old_process_lingers = false);
  void EndOldProcesses() { lingering_.clear(); }
  // This host cannot see HAProxy's processes (a TCP stats socket, another PID namespace):
  // ProcessMayRun is false for every pid, the running process's too.
  void HidePids() { pids_hidden_ = true; }
  // `Uptime_sec` in `show info` (a day by default, 0 after a Reload); it does not move by
  // itself.
  void SetUptime(std::int64_t seconds) { uptime_sec_ = seconds; }
  bool ProcessMayRun(std::string_view pid) const override {
    if (pids_hidden_) return false;
    return pid == std::to_string(pid_) || lingering_.contains(std::string(pid));
  }
  // Processes are seen (ProcessMayRun) but their command lines are not (another user's under
  // systemd's ProtectProc=invisible: kill(pid, 0) says EPERM).
  void HideCommandLines() { command_lines_hidden_ = true; }
  // The replaced processes that still run, as the command line of the running one names them.
  std::optional<std::vector<std::string>> ReplacedAtStart(std::string_view pid) const override {
    if (pids_hidden_ || command_lines_hidden_ || pid != std::to_string(pid_)) return std::nullopt;
    return std::vector<std::string>(lingering_.begin(), lingering_.end());
  }

  Result<std::vector<std::string>> Execute(const std::vector<std::string>& commands) override;
  Result<std::vector<std::string>> Apply(std::span<const Operation> operations) override;

  // HAProxy's checks of a server (with `check`, not in maint) pass `rise` times: it is UP with a
  // passing result; or they fail: it is DOWN.
  void PassChecks(const std::string& backend, const std::string& name);
  void FailChecks(const std::string& backend, const std::string& name);
  // Current sessions (`scur` in `show stat`).
  void SetSessions(const std::string& backend, const std::string& name, int sessions);

  // `balance source` without `hash-type consistent`: weights other than 0 and the initial one
  // (1) are refused, with HAProxy 2.6's reply.
  void UseStaticAlgorithm(const std::string& backend, bool use = true) {
    backends_.at(backend).static_algorithm = use;
  }

  // The next `n` Execute calls fail as if the socket were down.
  void FailNextExecutes(int n) { fail_next_ = n; }
  // After `n` more operations (over one Apply or several), the Apply under way fails as on a
  // connection closed mid-batch.
  void CutAfterOperations(int n) { cut_after_ = n; }
  // `show servers state <backend>` answers what no parser takes, while `unreadable`.
  void MakeStateUnreadable(const std::string& backend, bool unreadable = true) {
    if (unreadable) {
      unreadable_.insert(backend);
    } else {
      unreadable_.erase(backend);
    }
  }
  // Answer admin commands "Permission denied", as HAProxy does on a socket below level admin.
  void DenyAdminCommands() { deny_admin_ = true; }

  const std::vector<ServerState>& servers(const std::string& backend) const {
    return backends_.at(backend).servers;
  }
  ServerState& server(const std::string& backend, const std::string& name);
  // Every command received (operations as Render writes them), in order, and how many were
  // writes (operations).
  const std::vector<std::string>& received() const { return received_; }
  int write_count() const { return write_count_; }
  int execute_count() const { return execute_count_; }
  int apply_count() const { return apply_count_; }
  void ClearReceived() {
    received_.clear();
    write_count_ = 0;
  }

 private:
  struct Backend {
    int id = 0;
    std::string base;
    int count = 0;
    int port = 80;
    bool check = false;
    bool static_algorithm = false;
    std::vector<ServerState> servers;
    std::map<std::string, int> sessions;
  };
  std::string Run(const std::string& command);
  std::string ShowServersState(const std::string& backend) const;
  std::string ShowStat(const std::string& backend) const;
  std::string ApplyOne(const Operation& operation);
  bool Fail();
  void ResetBackend(Backend& backend);

  std::map<std::string, Backend> backends_;
  std::set<std::string> frontends_;
  std::vector<std::string> received_;
  int write_count_ = 0;
  int execute_count_ = 0;
  int apply_count_ = 0;
  int fail_next_ = 0;
  std::optional<int> cut_after_;
  std::set<std::string> unreadable_;
  bool deny_admin_ = false;
  int next_backend_id_ = 2;
  int pid_ = 100;
  std::set<std::string> lingering_;  // replaced processes that still run
  bool pids_hidden_ = false;
  bool command_lines_hidden_ = false;
  std::int64_t uptime_sec_ = 86'400;
};

}  // namespace hsdo::haproxy
