#include "haproxy/fake_haproxy.h"

#include <charconv>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>

#include "common/validate.h"

namespace hsdo::haproxy {
namespace {

constexpr int kCmaint = 0x04;
constexpr int kFmaint = 0x01;
constexpr int kFdrain = 0x08;

std::vector<std::string> Words(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> words;
  for (std::string word; in >> word;) words.push_back(word);
  return words;
}

bool ToInt(const std::string& text, int& out) {
  const auto* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && ptr == end;
}

}  // namespace

void FakeHaproxy::AddBackend(const std::string& name, const std::string& base, int count,
                             int port) {
  Backend backend{.id = next_backend_id_++, .base = base, .count = count, .port = port};
  ResetBackend(backend);
  backends_[name] = std::move(backend);
}

void FakeHaproxy::ResetBackend(Backend& backend) {
  backend.servers.clear();
  for (int i = 1; i <= backend.count; ++i) {
    backend.servers.push_back({.backend_id = backend.id,
                               .id = i,
                               .name = fmt::format("{}{}", backend.base, i),
                               .address = "127.0.0.2",
                               .port = static_cast<std::uint16_t>(backend.port),
                               .op_state = 0,
                               .admin_bits = kCmaint | kFmaint,
                               .admin = AdminState::kMaint,
                               .weight = 1});
  }
}

void FakeHaproxy::Reload() {
  for (auto& [name, backend] : backends_) ResetBackend(backend);
  ++pid_;
}

ServerState& FakeHaproxy::server(const std::string& backend, const std::string& name) {
  for (auto& server : backends_.at(backend).servers) {
    if (server.name == name) return server;
  }
  throw std::out_of_range(name);
}

Result<std::vector<std::string>> FakeHaproxy::Execute(const std::vector<std::string>& commands) {
  ++execute_count_;
  if (fail_next_ > 0) {
    --fail_next_;
    return MakeError(ErrorCode::kUnavailable, "connect to fake: Connection refused");
  }
  std::vector<std::string> replies;
  for (const auto& command : commands) {
    received_.push_back(command);
    replies.push_back(Run(command));
  }
  return replies;
}

std::string FakeHaproxy::Run(const std::string& command) {
  if (deny_admin_ && (command.starts_with("set server ") || command.starts_with("expert-mode"))) {
    return "Permission denied";
  }
  if (command.starts_with("show servers state ")) {
    return ShowServersState(command.substr(std::string("show servers state ").size()));
  }
  if (command == kShowInfoCommand) {
    return fmt::format("Name: HAProxy\nVersion: 2.6.12\nPid: {}\nStart_time_sec: 1700000000", pid_);
  }
  if (command.starts_with("set server ")) {
    ++write_count_;
    return SetServer(command);
  }
  return "Unknown command, but maybe one of the following ones is a better match:";
}

std::string FakeHaproxy::ShowServersState(const std::string& name) const {
  const auto found = backends_.find(name);
  if (found == backends_.end()) return "Can't find backend.";
  std::string out =
      "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
      "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
      "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
      "srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr "
      "srv_agent_port";
  for (const auto& s : found->second.servers) {
    out += fmt::format("\n{} {} {} {} {} {} {} {} 1 0 1 0 0 8 0 0 0 - {} - 0 0 - - 0", s.backend_id,
                       name, s.id, s.name, s.address, s.op_state, s.admin_bits, s.weight, s.port);
  }
  return out;
}

std::string FakeHaproxy::SetServer(const std::string& command) {
  const auto words = Words(command);  // set server be/srv verb args...
  if (words.size() < 5) return "Require 'backend/server'.";
  const auto slash = words[2].find('/');
  if (slash == std::string::npos) return "Require 'backend/server'.";
  const auto found = backends_.find(words[2].substr(0, slash));
  if (found == backends_.end()) return "No such backend.";
  ServerState* server = nullptr;
  for (auto& s : found->second.servers) {
    if (s.name == words[2].substr(slash + 1)) server = &s;
  }
  if (server == nullptr) return "No such server.";
  const std::string& verb = words[3];
  if (verb == "weight") {
    int weight = 0;
    if (!ToInt(words[4], weight) || weight < 0 || weight > 256) {
      return "Absolute weight can only be between 0 and 256 inclusive.";
    }
    server->weight = weight;
    return "";
  }
  if (verb == "state") {
    if (words[4] == "ready") {
      server->admin_bits &= ~(kFmaint | kFdrain);
    } else if (words[4] == "maint") {
      server->admin_bits = (server->admin_bits | kFmaint) & ~kFdrain;
    } else if (words[4] == "drain") {
      server->admin_bits = (server->admin_bits | kFdrain) & ~kFmaint;
    } else {
      return "'set server <srv> state' expects 'ready', 'drain' and 'maint'.";
    }
    server->admin = AdminStateFromBits(server->admin_bits);
    return "";
  }
  if (verb == "addr") {
    auto ip = CanonicalIp(words[4]);
    if (!ip) return fmt::format("Invalid addr '{}' by 'stats socket command'", words[4]);
    int port = server->port;
    if (words.size() >= 7 && words[5] == "port" && !ToInt(words[6], port)) {
      return "Invalid port";
    }
    std::string reply = *ip == server->address
                            ? "no need to change the addr"
                            : fmt::format("IP changed from '{}' to '{}'", server->address, *ip);
    reply += port == server->port
                 ? ", no need to change the port"
                 : fmt::format(", port changed from '{}' to '{}'", server->port, port);
    server->address = *ip;
    server->port = static_cast<std::uint16_t>(port);
    return reply + " by 'stats socket command'";
  }
  return "'set server <srv>' only supports 'agent', 'health', 'state', 'weight', 'addr', "
         "'fqdn' and 'check-addr'.";
}

}  // namespace hsdo::haproxy
