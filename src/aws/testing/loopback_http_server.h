// A tiny HTTP/1.1 server on 127.0.0.1 (an ephemeral port) for tests: one thread, one
// request per connection, answers from a handler. Enough for the credentials endpoints.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

namespace hsdo::aws::testing {

struct ServerRequest {
  std::string method, path;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  std::string Header(const std::string& lower_name) const {
    for (const auto& [k, v] : headers) {
      if (k == lower_name) return v;
    }
    return {};
  }
};

struct ServerResponse {
  int status = 200;
  std::string body;
};

class LoopbackHttpServer {
 public:
  using Handler = std::function<ServerResponse(const ServerRequest&)>;

  explicit LoopbackHttpServer(Handler handler) : handler_(std::move(handler)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(fd_, 16);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~LoopbackHttpServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  LoopbackHttpServer(const LoopbackHttpServer&) = delete;
  LoopbackHttpServer& operator=(const LoopbackHttpServer&) = delete;

  std::string url() const { return fmt::format("http://127.0.0.1:{}", port_); }
  std::vector<ServerRequest> requests() const {
    std::lock_guard lock(mutex_);
    return requests_;
  }

 private:
  void Serve() {
    while (!stop_) {
      pollfd pfd{fd_, POLLIN, 0};
      if (::poll(&pfd, 1, 50) <= 0) continue;
      const int client = ::accept(fd_, nullptr, nullptr);
      if (client < 0) continue;
      Handle(client);
      ::close(client);
    }
  }

  void Handle(int client) {
    std::string data;
    char buffer[4096];
    std::size_t header_end = std::string::npos;
    std::size_t content_length = 0;
    while (true) {
      pollfd pfd{client, POLLIN, 0};
      if (::poll(&pfd, 1, 2000) <= 0) return;
      const ssize_t n = ::recv(client, buffer, sizeof buffer, 0);
      if (n <= 0) return;
      data.append(buffer, static_cast<std::size_t>(n));
      if (header_end == std::string::npos) {
        header_end = data.find("\r\n\r\n");
        if (header_end == std::string::npos) continue;
        const auto pos = Lower(data.substr(0, header_end)).find("content-length:");
        if (pos != std::string::npos) content_length = std::stoul(data.substr(pos + 15));
      }
      if (data.size() >= header_end + 4 + content_length) break;
    }
    ServerRequest request;
    std::size_t line_end = data.find("\r\n");
    const std::string first = data.substr(0, line_end);
    request.method = first.substr(0, first.find(' '));
    request.path = first.substr(first.find(' ') + 1, first.rfind(' ') - first.find(' ') - 1);
    std::size_t pos = line_end + 2;
    while (pos < header_end) {
      line_end = data.find("\r\n", pos);
      const std::string line = data.substr(pos, line_end - pos);
      const auto colon = line.find(':');
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      request.headers.emplace_back(Lower(line.substr(0, colon)), value);
      pos = line_end + 2;
    }
    request.body = data.substr(header_end + 4, content_length);
    ServerResponse response = handler_(request);
    {
      std::lock_guard lock(mutex_);
      requests_.push_back(request);
    }
    const std::string out =
        fmt::format("HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    response.status, response.body.size(), response.body);
    ::send(client, out.data(), out.size(), MSG_NOSIGNAL);
  }

  static std::string Lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }

  Handler handler_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::vector<ServerRequest> requests_;
  std::thread thread_;
};

}  // namespace hsdo::aws::testing
