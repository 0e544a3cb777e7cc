#include "haproxy/servers_state.h"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

namespace hsdo::haproxy {
namespace {

constexpr std::size_t kColumnsV1 = 25;

// Column positions of format version 1 (HAProxy's doc/management.txt, `show servers state`).
constexpr std::size_t kBeId = 0;
constexpr std::size_t kSrvId = 2;
constexpr std::size_t kSrvName = 3;
constexpr std::size_t kSrvAddr = 4;
constexpr std::size_t kSrvOpState = 5;
constexpr std::size_t kSrvAdminState = 6;
constexpr std::size_t kSrvUweight = 7;
constexpr std::size_t kSrvIweight = 8;
constexpr std::size_t kSrvTimeSinceLastChange = 9;
constexpr std::size_t kSrvCheckResult = 11;
constexpr std::size_t kSrvCheckHealth = 12;
constexpr std::size_t kSrvCheckState = 13;
constexpr std::size_t kSrvAgentState = 14;
constexpr std::size_t kSrvPort = 18;
constexpr std::size_t kSrvCheckPort = 21;
constexpr std::size_t kSrvCheckAddr = 22;

// Into `fields` (cleared first), which keeps its capacity from one line to the next.
void SplitFields(std::string_view line, std::vector<std::string_view>& fields) {
  fields.clear();
  std::size_t position = 0;
  while (position < line.size()) {
    while (position < line.size() && line[position] == ' ') ++position;
    if (position >= line.size()) break;
    const auto end = line.find(' ', position);
    const auto stop = end == std::string_view::npos ? line.size() : end;
    fields.push_back(line.substr(position, stop - position));
    position = stop;
  }
}

bool ParseInt(std::string_view text, int& out) {
  const auto* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && ptr == end;
}

// HAProxy's range for a server's weight (srv_iweight may go back into `set server ... weight`).
bool IsHaproxyWeight(int weight) { return weight >= 0 && weight <= 256; }

}  // namespace

std::string_view ToString(AdminState state) {
  switch (state) {
    case AdminState::kReady:
      return "ready";
    case AdminState::kDrain:
      return "drain";
    case AdminState::kMaint:
      return "maint";
  }
  return "ready";
}

AdminState AdminStateFromBits(int bits) {
  if ((bits & kAdminMaintMask) != 0) return AdminState::kMaint;
  if ((bits & kAdminDrainMask) != 0) return AdminState::kDrain;
  return AdminState::kReady;
}

std::string ShowServersStateCommand(std::string_view backend) {
  return fmt::format("show servers state {}", backend);
}

Result<std::vector<ServerState>> ParseServersState(std::string_view reply) {
  std::vector<std::string_view> lines;
  std::size_t position = 0;
  while (position < reply.size()) {
    auto end = reply.find('\n', position);
    if (end == std::string_view::npos) end = reply.size();
    auto line = reply.substr(position, end - position);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.empty()) lines.push_back(line);
    position = end + 1;
  }
  if (lines.empty()) {
    return MakeError(ErrorCode::kUnavailable, "empty reply to show servers state");
  }
  if (lines.front().starts_with("Can't find backend")) {
    return MakeError(ErrorCode::kNotFound, "no such backend");
  }
  if (lines.front() != "1") {
    return MakeError(ErrorCode::kInvalidArgument,
                     "unsupported `show servers state` format version '{}' (hsdo reads version 1)",
                     lines.front().substr(0, 80));
  }
  std::vector<ServerState> servers;
  servers.reserve(lines.size() - 1);
  std::vector<std::string_view> fields;
  fields.reserve(kColumnsV1);
  for (std::size_t i = 1; i < lines.size(); ++i) {
    const auto line = lines[i];
    if (line.front() == '#') continue;
    SplitFields(line, fields);
    // Version 1 has grown at its end before (19 columns in 2.0, 25 since 2.4) while keeping
    // its number: columns a later HAProxy adds after the 25 read are left alone, as HAProxy's
    // own state-file reader does. (Every backend read failed on one: nothing was applied, and
    // a reload never repaired.)
    if (fields.size() < kColumnsV1) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "show servers state line {} has {} columns, expected at least {}: '{}'",
                       i + 1, fields.size(), kColumnsV1, line.substr(0, 200));
    }
    ServerState server;
    int port = 0;
    if (!ParseInt(fields[kBeId], server.backend_id) || !ParseInt(fields[kSrvId], server.id) ||
        !ParseInt(fields[kSrvOpState], server.op_state) ||
        !ParseInt(fields[kSrvAdminState], server.admin_bits) ||
        !ParseInt(fields[kSrvUweight], server.weight) ||
        !ParseInt(fields[kSrvIweight], server.initial_weight) ||
        !ParseInt(fields[kSrvPort], port) ||
        !ParseInt(fields[kSrvCheckResult], server.check_result) ||
        !ParseInt(fields[kSrvCheckHealth], server.check_health) ||
        !ParseInt(fields[kSrvCheckState], server.check_state) ||
        !ParseInt(fields[kSrvAgentState], server.agent_state) || port < 0 || port > 65535 ||
        !IsHaproxyWeight(server.weight) || !IsHaproxyWeight(server.initial_weight) ||
        // HAProxy prints ids from 1 and states as unsigned: a negative admin state read as
        // maint (any bit set; found by fuzzing), so a garbled reply is refused, not misread.
        server.backend_id < 1 || server.id < 1 || server.op_state < 0 || server.admin_bits < 0 ||
        server.check_result < 0 || server.check_health < 0 || server.check_state < 0 ||
        server.agent_state < 0) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "show servers state line {} has a malformed number: '{}'", i + 1,
                       line.substr(0, 200));
    }
    // Orders probes only (HeldPortMoves): one that does not read is no reason to refuse it.
    if (!ParseInt(fields[kSrvTimeSinceLastChange], server.since_change)) server.since_change = 0;
    // A check of its own port or address (measured on 2.6.12: 0 and "-" without): it tells
    // nothing of the server's address and port. Proves nothing then: one that does not read is
    // taken as such.
    int check_port = 0;
    server.check_elsewhere = !ParseInt(fields[kSrvCheckPort], check_port) || check_port != 0 ||
                             fields[kSrvCheckAddr] != "-";
    server.name = std::string(fields[kSrvName]);
    server.address = std::string(fields[kSrvAddr]);
    server.port = static_cast<std::uint16_t>(port);
    server.admin = AdminStateFromBits(server.admin_bits);
    servers.push_back(std::move(server));
  }
  if (servers.empty()) {
    return MakeError(ErrorCode::kNotFound, "{}", kNoServers);
  }
  return servers;
}

std::string ShowStatServersCommand(std::string_view backend, int backend_id) {
  // Type 4: servers only. A name is checked before it gets here (IsValidHaproxyName).
  if (backend_id > 0) return fmt::format("show stat {} 4 -1", backend_id);
  return fmt::format("show stat {} 4 -1", backend);
}

namespace {

std::vector<std::string_view> SplitCsv(std::string_view line) {
  std::vector<std::string_view> fields;
  std::size_t position = 0;
  for (;;) {
    const auto comma = line.find(',', position);
    fields.push_back(line.substr(position, comma - position));
    if (comma == std::string_view::npos) break;
    position = comma + 1;
  }
  return fields;
}

}  // namespace

Result<std::map<std::string, int>> ParseStatSessions(std::string_view reply,
                                                     std::string_view backend) {
  std::map<std::string, int> sessions;
  std::size_t proxy_column = 0;
  std::size_t name_column = 0;
  std::size_t scur_column = 0;
  bool header = false;
  std::size_t position = 0;
  while (position < reply.size()) {
    const auto end = std::min(reply.find('\n', position), reply.size());
    const std::string_view line = reply.substr(position, end - position);
    position = end + 1;
    if (line.empty()) continue;
    if (line.starts_with("# ")) {
      const auto columns = SplitCsv(line.substr(2));
      const auto proxy = std::find(columns.begin(), columns.end(), "pxname");
      const auto name = std::find(columns.begin(), columns.end(), "svname");
      const auto scur = std::find(columns.begin(), columns.end(), "scur");
      if (proxy == columns.end() || name == columns.end() || scur == columns.end()) {
        return MakeError(ErrorCode::kInvalidArgument,
                         "show stat header without pxname/svname/scur");
      }
      proxy_column = static_cast<std::size_t>(proxy - columns.begin());
      name_column = static_cast<std::size_t>(name - columns.begin());
      scur_column = static_cast<std::size_t>(scur - columns.begin());
      header = true;
      continue;
    }
    if (!header) {
      return MakeError(ErrorCode::kInvalidArgument, "unexpected reply to show stat: '{}'",
                       line.substr(0, 80));
    }
    const auto fields = SplitCsv(line);
    int scur = 0;
    // HAProxy's scur is never negative: one that is (a garbled reply) could cancel another
    // backend's sessions in the node's sum, and a slot read as drained be freed under them.
    if (fields.size() <= std::max({proxy_column, name_column, scur_column}) ||
        !ParseInt(fields[scur_column], scur) || scur < 0) {
      return MakeError(ErrorCode::kInvalidArgument, "malformed show stat line: '{}'",
                       line.substr(0, 200));
    }
    if (fields[proxy_column] != backend) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "show stat answered with the servers of another proxy, not backend '{}'",
                       backend);
    }
    sessions[std::string(fields[name_column])] = scur;
  }
  if (!header) return MakeError(ErrorCode::kUnavailable, "empty reply to show stat");
  return sessions;
}

Result<ProcessIdentity> ParseShowInfo(std::string_view reply) {
  ProcessIdentity identity;
  std::size_t position = 0;
  while (position < reply.size()) {
    const auto end = std::min(reply.find('\n', position), reply.size());
    const std::string_view line = reply.substr(position, end - position);
    position = end + 1;
    if (line.starts_with("Pid: ")) identity.pid = line.substr(5);
    if (line.starts_with("Start_time_sec: ")) identity.start_time = line.substr(16);
  }
  if (identity.pid.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "no Pid in the reply to `show info`");
  }
  return identity;
}

std::optional<std::chrono::seconds> ShowInfoUptime(std::string_view reply) {
  constexpr std::string_view kField = "Uptime_sec: ";
  std::size_t position = 0;
  while (position < reply.size()) {
    const auto end = std::min(reply.find('\n', position), reply.size());
    const std::string_view line = reply.substr(position, end - position);
    position = end + 1;
    if (!line.starts_with(kField)) continue;
    const std::string_view digits = line.substr(kField.size());
    std::int64_t seconds = 0;
    const auto [last, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), seconds);
    if (digits.empty() || digits.front() == '-' || ec != std::errc() ||
        last != digits.data() + digits.size()) {
      return std::nullopt;
    }
    return std::chrono::seconds{seconds};
  }
  return std::nullopt;
}

bool ShowInfoSaysStopping(std::string_view reply) {
  std::size_t position = 0;
  while (position < reply.size()) {
    const auto end = std::min(reply.find('\n', position), reply.size());
    if (reply.substr(position, end - position) == "Stopping: 1") return true;
    position = end + 1;
  }
  return false;
}

}  // namespace hsdo::haproxy
