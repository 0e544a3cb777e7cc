#include "http/http_client.h"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

#include "aws/testing/loopback_http_server.h"
#include "http/testing/endless_answer.h"

namespace hsdo::http {
namespace {

TEST(CaFile, TheGivenBundleElseTheSystemsBundleFileNeverTheDirectory) {
  const auto none = [](const std::string&) { return false; };
  const auto all = [](const std::string&) { return true; };
  const auto red_hat = [](const std::string& path) { return path.starts_with("/etc/pki/"); };
  EXPECT_EQ(CaFile({.ca_file = "/etc/hsdo/ca.pem"}, all), "/etc/hsdo/ca.pem");
  EXPECT_EQ(CaFile({}, all), "/etc/ssl/certs/ca-certificates.crt");
  EXPECT_EQ(CaFile({}, red_hat), "/etc/pki/tls/certs/ca-bundle.crt");
  EXPECT_EQ(CaFile({}, none), "");  // libcurl's defaults
}

TEST(UrlEncode, KeepsUnreservedOnly) {
  EXPECT_EQ(UrlEncode("AZaz09-_.~"), "AZaz09-_.~");
  EXPECT_EQ(UrlEncode("a b/c=d&e"), "a%20b%2Fc%3Dd%26e");
  EXPECT_EQ(UrlEncode("\xC3\xA9"), "%C3%A9");
  EXPECT_EQ(UrlEncode("/a b/"), "%2Fa%20b%2F");
  EXPECT_EQ(UrlEncode("/a b/", /*keep_slash=*/true), "/a%20b/");
}

TEST(Response, HeaderLookupIgnoresCase) {
  Response response;
  response.headers = {{"X-Consul-Index", "42"}, {"Content-Type", "application/json"}};
  EXPECT_EQ(response.Header("x-consul-index"), "42");
  EXPECT_EQ(response.Header("missing"), "");
}

TEST(CurlHttpClient, RefusedConnectionIsUnavailable) {
  auto client = MakeCurlHttpClient();
  // Port 1 on loopback: nothing listens there.
  auto result = client->Send({.url = "http://127.0.0.1:1/x?token=secret"});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(result.error().message.find("secret"), std::string::npos);
}

bool Mapped(const std::string& soname) {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    if (line.find("/" + soname) != std::string::npos) return true;
  }
  return false;
}

// Once libcurl is loaded and initialised (by a first request), no OpenSSL was set up for it:
// the GnuTLS build of libcurl is the one loaded (libssl is not mapped), and libssh2, which
// libcurl initialises and which links libcrypto, skipped its crypto set-up (OpenSSL's
// built-in engines are not loaded). Either would make ~1.5 MB more resident.
TEST(CurlHttpClient, LoadsNoOpenSslSetUp) {
  auto client = MakeCurlHttpClient();
  (void)client->Send({.url = "http://127.0.0.1:1/"});
  EXPECT_TRUE(Mapped("libcurl-gnutls.so.4")) << "libcurl3-gnutls is not installed?";
  EXPECT_FALSE(Mapped("libssl.so.3"));
  void* crypto = ::dlopen("libcrypto.so.3", RTLD_NOW | RTLD_NOLOAD);
  ASSERT_NE(crypto, nullptr) << "libcurl's dependencies no longer include libcrypto";
  auto* first_engine = reinterpret_cast<void* (*)()>(::dlsym(crypto, "ENGINE_get_first"));
  ASSERT_NE(first_engine, nullptr);
  EXPECT_EQ(first_engine(), nullptr) << "OpenSSL's built-in engines were loaded";
  ::dlclose(crypto);
}

// A request to a server that never answers ends soon after its cancel token is stopped, not
// at its timeout: how a Consul long poll ends when the source shuts down.
TEST(CurlHttpClient, CancelEndsARequestInFlight) {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener, 4), 0);  // the kernel accepts; nobody ever answers
  socklen_t len = sizeof(addr);
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);

  std::stop_source stop;
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    stop.request_stop();
  });
  auto client = MakeCurlHttpClient();
  const auto started = std::chrono::steady_clock::now();
  auto result = client->Send({.url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)),
                              .timeout = std::chrono::seconds(30),
                              .cancel = stop.get_token()});
  const auto took = std::chrono::steady_clock::now() - started;
  canceller.join();
  ::close(listener);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kUnavailable);
  EXPECT_LT(took, std::chrono::seconds(5));
}

// A loopback listener that the kernel accepts connections on and nobody ever answers.
class BlackHole {
 public:
  BlackHole() : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::listen(fd_, 4);
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    url_ = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/";
  }
  ~BlackHole() { ::close(fd_); }
  BlackHole(const BlackHole&) = delete;
  BlackHole& operator=(const BlackHole&) = delete;
  const std::string& url() const { return url_; }

 private:
  int fd_;
  std::string url_;
};

using Clock = std::chrono::steady_clock;

// Found in review: libcurl's detail names how long a request took ("Operation timed out after
// 301 milliseconds with 0 bytes received"), so the same fault gave another message at every
// request, and every "once per cause" log line was written every cycle.
TEST(CurlHttpClient, AnErrorSaysTheSameForTheSameFaultWhateverItsTimings) {
  BlackHole hole;
  auto client = MakeCurlHttpClient();
  auto first = client->Send({.url = hole.url(), .timeout = std::chrono::milliseconds(120)});
  auto second = client->Send({.url = hole.url(), .timeout = std::chrono::milliseconds(260)});
  ASSERT_FALSE(first.ok());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(first.error().message, second.error().message);
  EXPECT_NE(first.error().message.find("timed out"), std::string::npos) << first.error().message;
  EXPECT_EQ(first.error().message.find("millisecond"), std::string::npos) << first.error().message;
}

// Stops `stop` after `delay` and records when; joins on destruction.
class DelayedStop {
 public:
  DelayedStop(std::stop_source& stop, std::chrono::milliseconds delay)
      : thread_([this, &stop, delay] {
          std::this_thread::sleep_for(delay);
          stopped_at_ = Clock::now();
          stop.request_stop();
        }) {}
  ~DelayedStop() {
    if (thread_.joinable()) thread_.join();
  }
  DelayedStop(const DelayedStop&) = delete;
  DelayedStop& operator=(const DelayedStop&) = delete;
  // When the stop was requested (waits for it).
  Clock::time_point stopped_at() {
    if (thread_.joinable()) thread_.join();
    return stopped_at_;
  }

 private:
  Clock::time_point stopped_at_;
  std::thread thread_;
};

// Prompt stop: SIGTERM must end hsdo within a second even while a request hangs, so the
// request must end within milliseconds of its cancel, not at libcurl's next progress call.
TEST(CurlHttpClient, CancelEndsARequestWithinMilliseconds) {
  BlackHole hole;
  std::stop_source stop;
  auto client = MakeCurlHttpClient();
  DelayedStop canceller(stop, std::chrono::milliseconds(300));
  auto result = client->Send(
      {.url = hole.url(), .timeout = std::chrono::seconds(30), .cancel = stop.get_token()});
  const auto returned = Clock::now();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(result.error().message.find("cancelled"), std::string::npos) << result.error().message;
  const auto late = returned - canceller.stopped_at();
  EXPECT_LT(late, std::chrono::milliseconds(100))
      << std::chrono::duration_cast<std::chrono::milliseconds>(late).count() << " ms";
}

// The client's own token (for owners that cannot set one per request) ends every request.
TEST(CurlHttpClient, ClientCancelTokenEndsEveryRequest) {
  BlackHole hole;
  std::stop_source stop;
  auto client = MakeCurlHttpClient({}, stop.get_token());
  {
    DelayedStop canceller(stop, std::chrono::milliseconds(200));
    auto result = client->Send({.url = hole.url(), .timeout = std::chrono::seconds(30)});
    const auto late = Clock::now() - canceller.stopped_at();
    ASSERT_FALSE(result.ok());
    EXPECT_LT(late, std::chrono::milliseconds(100));
  }
  // Once stopped, nothing more is sent.
  const auto started = Clock::now();
  auto again = client->Send({.url = hole.url(), .timeout = std::chrono::seconds(30)});
  ASSERT_FALSE(again.ok());
  EXPECT_LT(Clock::now() - started, std::chrono::milliseconds(100));
}

// A request cancelled half-way leaves the client usable (its connection is dropped, not
// reused), and an uncancelled request is unaffected by a token that is never stopped.
TEST(CurlHttpClient, WorksAfterACancelledRequest) {
  aws::testing::LoopbackHttpServer server([](const aws::testing::ServerRequest&) {
    return aws::testing::ServerResponse{200, "ok"};
  });
  BlackHole hole;
  std::stop_source never;
  auto client = MakeCurlHttpClient({}, never.get_token());
  std::stop_source stop;
  {
    DelayedStop canceller(stop, std::chrono::milliseconds(50));
    ASSERT_FALSE(client->Send({.url = hole.url(), .cancel = stop.get_token()}).ok());
  }
  for (int i = 0; i < 3; ++i) {
    auto result = client->Send({.url = server.url() + "/x"});
    ASSERT_TRUE(result.ok()) << result.error().message;
    EXPECT_EQ(result->status, 200);
    EXPECT_EQ(result->body, "ok");
  }
}

// A streamed answer reaches on_body chunk by chunk, while the response is still open (etcd's
// watch), and on_body returning false ends the request.
// Found in review: a peer that sends without end (a wrong address, a broken proxy) took an
// agent to 1.1 GB within its request's timeout, an orchestrator to std::bad_alloc.
TEST(CurlHttpClient, AnAnswerLargerThanTheLimitFailsTheRequest) {
  std::optional<testing::EndlessAnswer> server;
  constexpr std::size_t kLimit = std::size_t{4} << 20;  // the default, 512 MiB, as well
  server.emplace("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", 16 * kLimit);
  auto client = MakeCurlHttpClient();
  auto result = client->Send({.url = server->url() + "/v1/health/service/web",
                              .timeout = std::chrono::seconds(30),
                              .max_body_bytes = kLimit});
  const std::size_t sent = server->sent();
  server.reset();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(result.error().message.find("larger than 4 MiB"), std::string::npos)
      << result.error().message;
  EXPECT_LT(sent, 8 * kLimit);  // read no further than the limit (and the sockets' buffers)
}

TEST(CurlHttpClient, OnBodyStreamsChunksAsTheyArrive) {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);

  std::atomic<bool> first_seen{false};
  std::thread server([&] {
    const int conn = ::accept(listener, nullptr, nullptr);
    const std::string head =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n";
    (void)::send(conn, head.data(), head.size(), MSG_NOSIGNAL);
    // The second chunk goes out only once the client has seen the first.
    for (int i = 0; i < 500 && !first_seen.load(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const std::string second = "7\r\nsecond\n\r\n";
    (void)::send(conn, second.data(), second.size(), MSG_NOSIGNAL);
    char buffer[256];
    while (::recv(conn, buffer, sizeof(buffer), 0) > 0) {
    }
    ::close(conn);
  });
  std::string received;
  auto client = MakeCurlHttpClient();
  auto result =
      client->Send({.method = "POST",
                    .url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/v3/watch",
                    .body = "{}",
                    .timeout = std::chrono::seconds(10),
                    .on_body = [&](std::string_view chunk) {
                      received.append(chunk);
                      if (received == "first\n") first_seen = true;
                      return received.find("second") == std::string::npos;  // enough: stop
                    }});
  server.join();
  ::close(listener);
  EXPECT_TRUE(first_seen.load());
  EXPECT_EQ(received, "first\nsecond\n");
  ASSERT_FALSE(result.ok());  // ended by on_body, not by the server
  EXPECT_EQ(result.error().code, ErrorCode::kUnavailable);
}

}  // namespace
}  // namespace hsdo::http
