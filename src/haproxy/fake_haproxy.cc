#include "haproxy/fake_haproxy.h"

#include <algorithm>
#include <stdexcept>

#include <fmt/format.h>

namespace hsdo::haproxy {
namespace {

constexpr int kCmaint = 0x04;
constexpr int kFmaint = 0x01;
constexpr int kFdrain = 0x08;
// srv_check_state: CONFIGURED | ENABLED, plus PAUSED while in maint.
constexpr int kCheckRunning = 0x02 | 0x04;
constexpr int kCheckPaused = 0x08;
constexpr int kRise = 2;
constexpr int kFall = 2;

}  // namespace

void FakeHaproxy::AddBackend(const std::string& name, const std::string& base, int count, int port,
                             bool check) {
  Backend backend{
      .id = next_backend_id_++, .base = base, .count = count, .port = port, .check = check};
  ResetBackend(backend);
  backends_[name] = std::move(backend);
}

void FakeHaproxy::ResetBackend(Backend& backend) {
  backend.servers.clear();
  for (int i = 1; i <= backend.count; ++i) {
    backend.sessions.clear();
    backend.servers.push_back(
        {.backend_id = backend.id,
         .id = i,
         .name = fmt::format("{}{}", backend.base, i),
         .address = "127.0.0.2",
         .port = static_cast<std::uint16_t>(backend.port),
         .op_state = 0,
         .admin_bits = kCmaint | kFmaint,
         .admin = AdminState::kMaint,
         .weight = 1,
         .initial_weight = 1,
         .check_state = backend.check ? kCheckRunning | kCheckPaused : kCheckPaused});
  }
}

void FakeHaproxy::Reload(bool old_process_lingers) {
  for (auto& [name, backend] : backends_) ResetBackend(backend);
  if (old_process_lingers) lingering_.insert(std::to_string(pid_));
  ++pid_;
  uptime_sec_ = 0;
}

ServerState& FakeHaproxy::server(const std::string& backend, const std::string& name) {
  for (auto& server : backends_.at(backend).servers) {
    if (server.name == name) return server;
  }
  throw std::out_of_range(name);
}

bool FakeHaproxy::Fail() {
  ++execute_count_;
  if (fail_next_ <= 0) return false;
  --fail_next_;
  return true;
}

Result<std::vector<std::string>> FakeHaproxy::Execute(const std::vector<std::string>& commands) {
  if (Fail()) return MakeError(ErrorCode::kUnavailable, "connect to fake: Connection refused");
  std::vector<std::string> replies;
  for (const auto& command : commands) {
    received_.push_back(command);
    replies.push_back(Run(command));
  }
  return replies;
}

Result<std::vector<std::string>> FakeHaproxy::Apply(std::span<const Operation> operations) {
  if (Fail()) return MakeError(ErrorCode::kUnavailable, "connect to fake: Connection refused");
  ++apply_count_;
  std::vector<std::string> replies;
  for (const auto& operation : operations) {
    if (cut_after_ && (*cut_after_)-- == 0) {
      cut_after_.reset();
      return MakeError(ErrorCode::kUnavailable, "fake: connection closed mid-batch");
    }
    received_.push_back(Render(operation));
    ++write_count_;
    replies.push_back(deny_admin_ ? "Permission denied" : ApplyOne(operation));
  }
  return replies;
}

std::string FakeHaproxy::Run(const std::string& command) {
  if (deny_admin_ && command.starts_with("expert-mode")) return "Permission denied";
  if (command.starts_with("show servers state ")) {
    return ShowServersState(command.substr(std::string("show servers state ").size()));
  }
  if (command.starts_with("show stat ") && command.ends_with(" 4 -1")) {
    const std::string_view prefix = "show stat ";
    return ShowStat(command.substr(prefix.size(), command.size() - prefix.size() - 5));
  }
  if (command == kShowInfoCommand) {
    return fmt::format(
        "Name: HAProxy\nVersion: 2.6.12\nPid: {}\nStart_time_sec: 1700000000\nUptime_sec: {}", pid_,
        uptime_sec_);
  }
  return "Unknown command, but maybe one of the following ones is a better match:";
}

std::string FakeHaproxy::ShowServersState(const std::string& name) const {
  const auto found = backends_.find(name);
  if (found == backends_.end()) return "Can't find backend.";
  if (unreadable_.contains(name)) return "2\n# a version this parser does not know\n";
  std::string out(kServersStateHeader);
  for (const auto& s : found->second.servers) {
    out += fmt::format("\n{} {} {} {} {} {} {} {} {} 0 1 {} {} {} {} 0 0 - {} - 0 0 - - 0",
                       s.backend_id, name, s.id, s.name, s.address, s.op_state, s.admin_bits,
                       s.weight, s.initial_weight, s.check_result, s.check_health, s.check_state,
                       s.agent_state, s.port);
  }
  return out;
}

std::string FakeHaproxy::ShowStat(const std::string& proxy) const {
  std::string out = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,status,weight,";
  if (frontends_.contains(proxy)) return out + "\n";
  // By name, or by the numeric id (`be_id`) as HAProxy takes it first.
  auto found = std::find_if(backends_.begin(), backends_.end(), [&](const auto& backend) {
    return std::to_string(backend.second.id) == proxy;
  });
  if (found == backends_.end()) found = backends_.find(proxy);
  if (found == backends_.end()) return "No such proxy.";
  const std::string& name = found->first;
  for (const auto& s : found->second.servers) {
    const auto sessions = found->second.sessions.find(s.name);
    out += fmt::format("\n{},{},0,0,{},0,,0,{},{},", name, s.name,
                       sessions == found->second.sessions.end() ? 0 : sessions->second,
                       ToString(s.admin), s.weight);
  }
  return out + "\n";
}

void FakeHaproxy::PassChecks(const std::string& backend, const std::string& name) {
  auto& s = server(backend, name);
  if (!s.has_check() || s.admin == AdminState::kMaint) return;
  s.op_state = ServerState::kOpRunning;
  s.check_result = ServerState::kCheckPassed;
  s.check_health = kRise + kFall - 1;
}

void FakeHaproxy::FailChecks(const std::string& backend, const std::string& name) {
  auto& s = server(backend, name);
  if (!s.has_check() || s.admin == AdminState::kMaint) return;
  s.op_state = 0;
  s.check_result = 2;
  s.check_health = 0;
}

void FakeHaproxy::SetSessions(const std::string& backend, const std::string& name, int sessions) {
  (void)server(backend, name);
  backends_.at(backend).sessions[name] = sessions;
}

std::string FakeHaproxy::ApplyOne(const Operation& operation) {
  const auto found = backends_.find(operation.backend);
  if (found == backends_.end()) return "No such backend.";
  ServerState* server = nullptr;
  for (auto& s : found->second.servers) {
    if (s.name == operation.server) server = &s;
  }
  if (server == nullptr) return "No such server.";
  switch (operation.kind) {
    case CommandKind::kWeight:
      if (operation.weight < 0 || operation.weight > 256) {
        return "Absolute weight can only be between 0 and 256 inclusive.";
      }
      if (found->second.static_algorithm && operation.weight != 0 &&
          operation.weight != server->initial_weight) {
        return "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.";
      }
      server->weight = operation.weight;
      return "";
    case CommandKind::kState: {
      const bool was_maint = server->admin == AdminState::kMaint;
      switch (operation.state) {
        case AdminState::kReady:
          server->admin_bits &= ~(kFmaint | kFdrain);
          break;
        case AdminState::kMaint:
          server->admin_bits = (server->admin_bits | kFmaint) & ~kFdrain;
          break;
        case AdminState::kDrain:
          server->admin_bits = (server->admin_bits | kFdrain) & ~kFmaint;
          break;
      }
      server->admin = AdminStateFromBits(server->admin_bits);
      if (server->admin == AdminState::kMaint) {
        server->op_state = 0;
        server->check_state |= kCheckPaused;
      } else if (was_maint) {
        // Out of maint: UP at once, health at `rise`, the last check result kept.
        server->op_state = ServerState::kOpRunning;
        if (server->has_check()) {
          server->check_state &= ~kCheckPaused;
          server->check_health = kRise;
        }
      }
      return "";
    }
    case CommandKind::kHealth:  // DOWN; the last check result is kept (measured on 2.6)
      server->op_state = 0;
      server->check_health = 0;
      return "";
    case CommandKind::kAddr: {
      if (server->address == "-") {  // `init-addr none`: no address family yet (2.6's reply)
        return "Update for the current server address family is only supported through "
               "configuration file by 'stats socket command'";
      }
      const std::string& ip = operation.address;
      const int port = operation.port;
      std::string reply = ip == server->address
                              ? "no need to change the addr"
                              : fmt::format("IP changed from '{}' to '{}'", server->address, ip);
      reply += port == server->port
                   ? ", no need to change the port"
                   : fmt::format(", port changed from '{}' to '{}'", server->port, port);
      server->address = ip;
      server->port = static_cast<std::uint16_t>(port);
      return reply + " by 'stats socket command'";
    }
    case CommandKind::kOther:
      break;
  }
  return "'set server <srv>' only supports 'agent', 'health', 'state', 'weight', 'addr', "
         "'fqdn' and 'check-addr'.";
}

}  // namespace hsdo::haproxy
