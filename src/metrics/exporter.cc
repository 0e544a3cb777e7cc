#include "metrics/exporter.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

#include "common/validate.h"

namespace hsdo {

namespace {

using SteadyTime = std::chrono::steady_clock::time_point;

// One accepted connection: it reads its request, then writes its response, then closes.
struct Connection {
  int fd = -1;
  std::string client;  // the peer's address, without the port
  SteadyTime deadline;
  std::string in;
  std::string out;
  std::size_t sent = 0;
  bool writing = false;
};

const char* Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 431:
      return "Request Header Fields Too Large";
    default:
      return "Service Unavailable";
  }
}

std::string PeerAddress(const sockaddr_storage& peer) {
  char text[INET6_ADDRSTRLEN] = {};
  if (peer.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&peer)->sin6_addr, text,
              sizeof(text));
  } else {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&peer)->sin_addr, text, sizeof(text));
  }
  return text;
}

void Close(Connection& connection) {
  if (connection.fd >= 0) ::close(connection.fd);
  connection.fd = -1;
}

// Sends what the socket takes now; closes the connection once everything is sent.
void Flush(Connection& connection) {
  while (connection.sent < connection.out.size()) {
    const ssize_t n = ::send(connection.fd, connection.out.data() + connection.sent,
                             connection.out.size() - connection.sent, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) break;
    connection.sent += static_cast<std::size_t>(n);
  }
  Close(connection);
}

// Closes the oldest open connection for which `match` holds (connections are in accept order).
template <typename Match>
void CloseOldest(std::vector<Connection>& connections, Match match) {
  for (auto& connection : connections) {
    if (connection.fd >= 0 && match(connection)) {
      Close(connection);
      return;
    }
  }
}

}  // namespace

Result<std::unique_ptr<Exporter>> Exporter::Start(const std::string& address, std::uint16_t port,
                                                  std::shared_ptr<prometheus::Registry> registry,
                                                  HealthCheck healthy) {
  const auto ip = CanonicalIp(address);
  if (!ip) return MakeError(ErrorCode::kInvalidArgument, "exporter address {}: not an IP", address);
  const bool v6 = IsIpv6(*ip);
  const std::string listen =
      v6 ? fmt::format("[{}]:{}", *ip, port) : fmt::format("{}:{}", *ip, port);
  std::unique_ptr<Exporter> exporter(new Exporter(std::move(registry), std::move(healthy)));

  sockaddr_storage storage{};
  socklen_t length = 0;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&storage);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    inet_pton(AF_INET6, ip->c_str(), &a->sin6_addr);
    length = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&storage);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    inet_pton(AF_INET, ip->c_str(), &a->sin_addr);
    length = sizeof(*a);
  }
  const int fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return MakeError(ErrorCode::kUnavailable, "exporter: socket: {}", std::strerror(errno));
  }
  exporter->listen_fd_ = fd;  // closed by the destructor from here on
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&storage), length) != 0 ||
      ::listen(fd, SOMAXCONN) != 0) {
    return MakeError(ErrorCode::kUnavailable,
                     "exporter: cannot listen on {} (EXPORTER_PORT in use?): {}", listen,
                     std::strerror(errno));
  }
  exporter->wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (exporter->wake_fd_ < 0) {
    return MakeError(ErrorCode::kUnavailable, "exporter: eventfd: {}", std::strerror(errno));
  }
  exporter->thread_ = std::thread([raw = exporter.get()] { raw->Run(); });
  return exporter;
}

Exporter::~Exporter() {
  if (thread_.joinable()) {
    stop_ = true;
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto written = ::write(wake_fd_, &one, sizeof(one));
    thread_.join();
  }
  if (wake_fd_ >= 0) ::close(wake_fd_);
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

Exporter::Response Exporter::Handle(std::string_view method, std::string_view path) const {
  if (method != "GET" && method != "HEAD") return {405, "text/plain", "GET only\n"};
  if (path == "/metrics") {
    return {200, "text/plain; version=0.0.4; charset=utf-8",
            prometheus::TextSerializer().Serialize(registry_->Collect())};
  }
  if (path == "/healthz") {
    if (healthy_ && healthy_()) return {200, "text/plain", "ok\n"};
    return {503, "text/plain", "loop not running\n"};
  }
  if (path == "/readyz") {
    std::string reason = "starting";
    {
      std::lock_guard lock(ready_mutex_);
      if (ready_) reason = ready_();
    }
    if (reason.empty()) return {200, "text/plain", "ready\n"};
    return {503, "text/plain", reason + "\n"};
  }
  return {404, "text/plain", "not found\n"};
}

void Exporter::SetReadiness(ReadinessCheck ready) {
  std::lock_guard lock(ready_mutex_);
  ready_ = std::move(ready);
}

void Exporter::Run() {
  std::vector<Connection> connections;
  std::vector<pollfd> fds;
  // Queues an answer and sends what the socket takes now.
  const auto reply = [](Connection& connection, const Response& response, bool head_only) {
    connection.out = fmt::format(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status, Reason(response.status), response.content_type, response.body.size());
    if (!head_only) connection.out += response.body;
    connection.writing = true;
    connection.deadline = std::chrono::steady_clock::now() + kWriteTimeout;
    Flush(connection);
  };
  // Parses a complete request head ("METHOD TARGET VERSION\r\n...") and answers it.
  const auto answer = [this, &reply](Connection& connection, std::size_t head_end) {
    const std::string_view head(connection.in.data(), head_end);
    const std::string_view line = head.substr(0, head.find("\r\n"));
    const std::size_t first = line.find(' ');
    const std::size_t second = first == std::string_view::npos ? first : line.find(' ', first + 1);
    if (second == std::string_view::npos) {
      reply(connection, {400, "text/plain", "bad request\n"}, false);
      return;
    }
    const std::string_view method = line.substr(0, first);
    std::string_view target = line.substr(first + 1, second - first - 1);
    target = target.substr(0, target.find('?'));
    reply(connection, Handle(method, target), method == "HEAD");
  };

  // Reads what has arrived; answers once the request head is complete.
  const auto read_request = [&](Connection& connection) {
    char buffer[4096];
    const ssize_t n = ::recv(connection.fd, buffer, sizeof(buffer), 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) {
      Close(connection);
      return;
    }
    connection.in.append(buffer, static_cast<std::size_t>(n));
    if (const auto end = connection.in.find("\r\n\r\n"); end != std::string::npos) {
      answer(connection, end);
    } else if (connection.in.size() > kMaxRequestBytes) {
      reply(connection, {431, "text/plain", "request headers too large\n"}, false);
    }
  };

  // Out of descriptors (EMFILE, ENFILE) a waiting connection keeps the listener readable: the
  // listener rests this long between tries (found in review: it was polled again at once, two
  // threads at 100 % of a core, beside HAProxy, for as long as it lasted).
  constexpr auto kAcceptRest = std::chrono::milliseconds(100);
  SteadyTime accept_resting_until{};  // resting while now is before it
  bool accept_failing = false;        // said once per episode

  while (!stop_) {
    // 1. Wait for the listener, the wake-up, or any connection; at most until the next deadline.
    const auto now = std::chrono::steady_clock::now();
    auto wait = std::chrono::milliseconds(1000);
    fds.clear();
    fds.push_back({listen_fd_, POLLIN, 0});
    const bool accept_resting = now < accept_resting_until;
    if (accept_resting) {
      fds.back().events = 0;
      wait =
          std::min(wait, std::chrono::ceil<std::chrono::milliseconds>(accept_resting_until - now));
    }
    fds.push_back({wake_fd_, POLLIN, 0});
    for (const auto& connection : connections) {
      fds.push_back({connection.fd, static_cast<short>(connection.writing ? POLLOUT : POLLIN), 0});
      wait = std::min(wait, std::chrono::ceil<std::chrono::milliseconds>(
                                std::max(connection.deadline - now, SteadyTime::duration{})));
    }
    // Without connections there is no deadline: sleep until a client or the wake-up (a tick
    // here cost an idle agent a wake-up every second, issue 12).
    const int timeout_ms =
        connections.empty() && !accept_resting ? -1 : static_cast<int>(wait.count());
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) {
      break;
    }
    if (stop_) break;

    // 2. Serve the connections that are ready, before taking new ones.
    for (std::size_t i = 0; i < connections.size(); ++i) {
      Connection& connection = connections[i];
      if (fds[i + 2].revents == 0) continue;
      if (connection.writing) {
        Flush(connection);
      } else {
        read_request(connection);
      }
    }

    // 3. Close what missed its deadline.
    const auto after = std::chrono::steady_clock::now();
    for (auto& connection : connections) {
      if (connection.fd >= 0 && after >= connection.deadline) Close(connection);
    }

    // 4. Take a few new connections (a small batch, so that the ones just taken are read
    //    before the next batch can push them out). Over a limit, the oldest connection that
    //    is still sending its request goes: of that client, or of all. A new connection is
    //    read at once: a scrape that sent its request with the connect is answered here.
    if (!accept_resting && fds[0].revents != 0) {
      for (std::size_t accepted = 0; accepted < kAcceptBatch; ++accepted) {
        sockaddr_storage peer{};
        socklen_t peer_length = sizeof(peer);
        const int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &peer_length,
                                 SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {  // EAGAIN: none left; others: try again next round
          if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            if (!accept_failing) {
              spdlog::warn("exporter: cannot take a connection ({}): scrapes wait",
                           strerror(errno));
            }
            accept_failing = true;
            accept_resting_until = after + kAcceptRest;
          }
          break;
        }
        accept_failing = false;
        Connection connection{
            .fd = fd, .client = PeerAddress(peer), .deadline = after + kHeaderTimeout};
        const auto reading = [](const Connection& c) { return c.fd >= 0 && !c.writing; };
        const auto same_client = [&](const Connection& c) {
          return reading(c) && c.client == connection.client;
        };
        if (static_cast<std::size_t>(std::count_if(connections.begin(), connections.end(),
                                                   same_client)) >= kMaxConnectionsPerClient) {
          CloseOldest(connections, same_client);
        }
        if (static_cast<std::size_t>(
                std::count_if(connections.begin(), connections.end(),
                              [](const Connection& c) { return c.fd >= 0; })) >= kMaxConnections) {
          CloseOldest(connections, reading);
        }
        read_request(connection);
        if (connection.fd >= 0) connections.push_back(std::move(connection));
      }
    }
    std::erase_if(connections, [](const Connection& c) { return c.fd < 0; });
  }
  for (auto& connection : connections) Close(connection);
}

}  // namespace hsdo
