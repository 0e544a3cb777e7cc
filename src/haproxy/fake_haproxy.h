// FakeHaproxy: an in-memory HAProxy for tests. It answers the runtime commands the agent uses
// (`show servers state`, `set server ... addr|weight|state`) with HAProxy's own reply texts, so
// that a reconcile can be applied and checked without a process.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "haproxy/runtime_api.h"
#include "haproxy/servers_state.h"

namespace hsdo::haproxy {

class FakeHaproxy final : public RuntimeApi {
 public:
  // Adds a backend with `server-template <base> 1-<count> 127.0.0.2:<port> disabled`.
  void AddBackend(const std::string& name, const std::string& base, int count, int port = 80);
  // What a reload without a state file does: every server back to its placeholder, in maint,
  // in a new process (another Pid in `show info`).
  void Reload();

  Result<std::vector<std::string>> Execute(const std::vector<std::string>& commands) override;

  // The next `n` Execute calls fail as if the socket were down.
  void FailNextExecutes(int n) { fail_next_ = n; }
  // Answer admin commands "Permission denied", as HAProxy does on a socket below level admin.
  void DenyAdminCommands() { deny_admin_ = true; }

  const std::vector<ServerState>& servers(const std::string& backend) const {
    return backends_.at(backend).servers;
  }
  ServerState& server(const std::string& backend, const std::string& name);
  // Every command received, in order, and how many were writes (`set ...`).
  const std::vector<std::string>& received() const { return received_; }
  int write_count() const { return write_count_; }
  int execute_count() const { return execute_count_; }
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
    std::vector<ServerState> servers;
  };
  std::string Run(const std::string& command);
  std::string ShowServersState(const std::string& backend) const;
  std::string SetServer(const std::string& command);
  void ResetBackend(Backend& backend);

  std::map<std::string, Backend> backends_;
  std::vector<std::string> received_;
  int write_count_ = 0;
  int execute_count_ = 0;
  int fail_next_ = 0;
  bool deny_admin_ = false;
  int next_backend_id_ = 2;
  int pid_ = 100;
};

}  // namespace hsdo::haproxy
