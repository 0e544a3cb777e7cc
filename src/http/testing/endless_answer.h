// A one-connection HTTP server on 127.0.0.1 that answers with `head` and then sends without
// end (at most `most` bytes), as a wrong address or a broken proxy may: for the tests of the
// limits on what a peer's answer may make this process hold.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>

namespace hsdo::http::testing {

class EndlessAnswer {
 public:
  EndlessAnswer(std::string head, std::size_t most) : head_(std::move(head)), most_(most) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::listen(listener_, 4);
    socklen_t len = sizeof(addr);
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    url_ = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
    thread_ = std::thread([this] { Serve(); });
  }
  ~EndlessAnswer() {
    ::shutdown(listener_, SHUT_RDWR);
    thread_.join();
    ::close(listener_);
  }
  EndlessAnswer(const EndlessAnswer&) = delete;
  EndlessAnswer& operator=(const EndlessAnswer&) = delete;

  const std::string& url() const { return url_; }  // no trailing '/'
  std::size_t sent() const { return sent_; }       // bytes of the body sent

 private:
  void Serve() {
    const int conn = ::accept(listener_, nullptr, nullptr);
    if (conn < 0) return;
    (void)::send(conn, head_.data(), head_.size(), MSG_NOSIGNAL);
    const std::string block(std::size_t{1} << 16, 'x');
    while (sent_ < most_) {
      const ssize_t n = ::send(conn, block.data(), block.size(), MSG_NOSIGNAL);
      if (n <= 0) break;
      sent_ += static_cast<std::size_t>(n);
    }
    ::close(conn);
  }

  std::string head_;
  std::size_t most_;
  int listener_ = -1;
  std::string url_;
  std::atomic<std::size_t> sent_{0};
  std::thread thread_;
};

}  // namespace hsdo::http::testing
