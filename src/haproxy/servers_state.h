// HAProxy's actual state of a backend, from `show servers state <backend>` (format version 1).
// The agent reads it every cycle and never trusts its own memory of what it sent: a reload, a
// hand edit or a health check may have changed anything (HAPROXY-FACTS.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace hsdo::haproxy {

// The admin state the agent manages, derived from the srv_admin_state bit field.
enum class AdminState { kReady, kDrain, kMaint };
std::string_view ToString(AdminState state);

// srv_admin_state bits (enum srv_admin in HAProxy's server-t.h). CMAINT (0x04, set by
// `disabled` in the config) is deliberately not in the maint mask: HAProxy clears FMAINT on
// `state ready` and leaves CMAINT set, and such a server takes traffic.
inline constexpr int kAdminMaintMask = 0x01 | 0x02 | 0x20;  // FMAINT | IMAINT | RMAINT
inline constexpr int kAdminDrainMask = 0x08 | 0x10;         // FDRAIN | IDRAIN
AdminState AdminStateFromBits(int bits);

struct ServerState {
  int backend_id = 0;      // be_id
  int id = 0;              // srv_id: the slot number, which places the server on the hash ring
  std::string name;        // srv_name
  std::string address;     // srv_addr, as HAProxy prints it
  std::uint16_t port = 0;  // srv_port (0 when the server has none)
  int op_state = 0;        // srv_op_state: 0 stopped, 1 starting, 2 running, 3 stopping
  int admin_bits = 0;      // srv_admin_state, raw
  AdminState admin = AdminState::kReady;
  int weight = 0;          // srv_uweight: the weight set by the config or `set server ... weight`
  int initial_weight = 0;  // srv_iweight: the config's weight (see ReconcileOptions)
  // srv_time_since_last_change: seconds since the server last changed state (UP, DOWN, maint).
  int since_change = 0;
  // Health check (measured on HAProxy 2.6, see HAPROXY-FACTS.md): srv_check_result 0 unknown
  // (no check has run), 2 failed, 3 passed; srv_check_state bit 0x02 (CHK_ST_CONFIGURED) says
  // that the server has `check` at all. `set server addr` and `health down` keep the last
  // result, and `state ready` makes a server UP before any check has run: only `health down`
  // (DOWN) followed by HAProxy's own `rise` passing checks (UP again) proves that the current
  // address answers.
  int check_result = 0;  // srv_check_result
  int check_health = 0;  // srv_check_health
  int check_state = 0;   // srv_check_state
  // srv_agent_state: the same bits for an `agent-check` (measured on 2.6.12: 0 without one,
  // 22 with one, CHK_ST_CONFIGURED among them).
  int agent_state = 0;
  // srv_check_port or srv_check_addr set (`check port`, `check addr`, `port`/`addr` on the
  // server line): the check goes elsewhere than the server's address and port, so its passing
  // proves nothing of them.
  bool check_elsewhere = false;

  bool has_check() const { return (check_state & kCheckConfigured) != 0; }
  // Not turned off by `disable health` (CHK_ST_ENABLED, 0x04: measured on 2.6.12, 0x0e in
  // maint where checks pause, 0x0a once disabled, the server then UP whatever answers).
  bool check_enabled() const { return (check_state & kCheckEnabled) != 0; }
  bool has_agent_check() const { return (agent_state & kCheckConfigured) != 0; }
  // UP: running, or starting (a server with `slowstart`, UP and taking a growing share of its
  // weight for that long: found in review, it was taken for down, so a new server waited the
  // whole slow start for its first weight and servers in slow start did not count as serving).
  bool up() const { return op_state == kOpRunning || op_state == kOpStarting; }
  // UP by HAProxy's checks, with a passing last result.
  bool check_passed() const { return up() && check_result == kCheckPassed; }

  static constexpr int kCheckConfigured = 0x02;
  static constexpr int kCheckEnabled = 0x04;
  static constexpr int kCheckPassed = 3;
  static constexpr int kOpStarting = 1;
  static constexpr int kOpRunning = 2;

  bool operator==(const ServerState&) const = default;
};

// Parses the reply to `show servers state <backend>`: first line "1" (the format version),
// a "#" header, then one line of 25 columns per server (more are left alone). Another version,
// a missing backend ("Can't find backend."), a backend without servers or a malformed line give
// an error.
Result<std::vector<ServerState>> ParseServersState(std::string_view reply);
// The message of ParseServersState's error for a backend without servers (kNotFound, as for a
// missing backend).
inline constexpr std::string_view kNoServers = "backend has no servers";

// The current sessions (`scur`) of each server of backend `backend`, by server name, from the
// reply to ShowStatServersCommand (CSV; the columns are found by name in the "# " header line).
// A row of another proxy is an error: HAProxy resolves the name in `show stat <name>` to the
// first proxy of that name, a frontend declared before its backend included (2.6.12, measured).
Result<std::map<std::string, int>> ParseStatSessions(std::string_view reply,
                                                     std::string_view backend);
// `show stat <id> 4 -1` by the backend's numeric id (`be_id` of `show servers state`) once it
// is known, which names no frontend; by its name before (0: not known yet).
std::string ShowStatServersCommand(std::string_view backend, int backend_id = 0);

// Which HAProxy process answered, from `show info`: its Pid and Start_time_sec. A reload
// (`-sf`, master-worker) or a restart changes it, and with it every runtime change is lost, so
// the agent compares it every cycle instead of dumping every server's state (HAPROXY-FACTS.md).
struct ProcessIdentity {
  std::string pid;
  std::string start_time;  // empty on versions without Start_time_sec
  bool operator==(const ProcessIdentity&) const = default;
};
inline constexpr std::string_view kShowInfoCommand = "show info";
// Errors when the reply has no "Pid: " line.
Result<ProcessIdentity> ParseShowInfo(std::string_view reply);
// True when the reply says "Stopping: 1": a process on its way out after a reload, which
// still answers the connections it accepted before.
bool ShowInfoSaysStopping(std::string_view reply);
// `Uptime_sec` of a reply to `show info`: how long the process has run, on HAProxy's own clock
// (no wall clock involved); nullopt when absent or not a number.
std::optional<std::chrono::seconds> ShowInfoUptime(std::string_view reply);

// The command that reads one backend's state. The name must be valid (IsValidHaproxyName).
std::string ShowServersStateCommand(std::string_view backend);

}  // namespace hsdo::haproxy
