// EtcdProcess: one real etcd member (Debian's etcd-server, /usr/bin/etcd or $ETCD_BIN) for
// tests, on 127.0.0.1 with free ports and its own data directory, stopped by its PID.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/testing/temp_dir.h"
#include "http/http_client.h"

namespace hsdo::etcd::testing {

// A port that was free a moment ago (bound to port 0, then released).
inline int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t size = sizeof(address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size);
  ::close(fd);
  return ntohs(address.sin_port);
}

class EtcdProcess {
 public:
  EtcdProcess() : client_port_(FreePort()), peer_port_(FreePort()) {}
  ~EtcdProcess() { Stop(); }
  EtcdProcess(const EtcdProcess&) = delete;
  EtcdProcess& operator=(const EtcdProcess&) = delete;

  // Starts the member and waits (at most 20 s) until it answers a range. False on failure.
  bool Start(const std::vector<std::string>& extra_args = {}) {
    const char* bin = std::getenv("ETCD_BIN");
    const std::string binary = bin != nullptr ? bin : "/usr/bin/etcd";
    const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
    std::vector<std::string> args = {binary,
                                     "--name=m",
                                     "--data-dir=" + dir_.File("data"),
                                     "--listen-client-urls=" + endpoint(),
                                     "--advertise-client-urls=" + endpoint(),
                                     "--listen-peer-urls=" + peer,
                                     "--initial-advertise-peer-urls=" + peer,
                                     "--initial-cluster=m=" + peer,
                                     "--heartbeat-interval=50",
                                     "--election-timeout=500"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    const std::string log = dir_.File("etcd.log");
    pid_ = ::fork();
    if (pid_ == 0) {
      // The member dies with the test process, even when a crash skips the destructor.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      std::vector<char*> argv;
      for (auto& arg : args) argv.push_back(arg.data());
      argv.push_back(nullptr);
      ::execv(binary.c_str(), argv.data());
      ::_exit(127);
    }
    if (pid_ < 0) return false;
    auto http = http::MakeCurlHttpClient();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      auto response = http->Send({.method = "POST",
                                  .url = endpoint() + "/v3/kv/range",
                                  .body = R"({"key":"eA=="})",
                                  .timeout = std::chrono::milliseconds(500)});
      if (response && response->status == 200) return true;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  // Deletes the member's data (stop it first): started again, it is a new cluster whose
  // revisions count from 1, as after a rebuild or a restore from an older snapshot.
  void WipeData() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_.File("data"), ignored);
  }

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(client_port_); }

 private:
  hsdo::testing::TempDir dir_;
  int client_port_;
  int peer_port_;
  pid_t pid_ = -1;
};

// A test suite sharing one member (each test uses keys of its own): etcd() in the tests.
class EtcdSuite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    etcd_ = new EtcdProcess();
    ASSERT_TRUE(etcd_->Start()) << "etcd did not start (is etcd-server installed?)";
  }
  static void TearDownTestSuite() {
    delete etcd_;
    etcd_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(etcd_, nullptr); }
  static EtcdProcess& etcd() { return *etcd_; }

 private:
  static inline EtcdProcess* etcd_ = nullptr;
};

}  // namespace hsdo::etcd::testing
