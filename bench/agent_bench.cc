// The agent's cycle against a real HAProxy: a full table of 100 and of 1000 slots applied to 2
// backends (addr + weight + ready for every slot, 6 x N commands in one connection), a cycle
// in which nothing changed (one `show info`), the floor under a steady cycle (a wake-up from
// idle, with and without one `show info`), and a DynamoDB agent's store read (one HTTP request
// on a kept loopback connection: through libcurl as the agent sends it, and the bare exchange).
//
// The benchmark starts its own HAProxy (HAPROXY_BIN or /usr/sbin/haproxy) with a stats socket
// in a private /tmp directory and an HTTP frontend on a free loopback port (it answers as
// DynamoDB answers a GetItem), and stops it by its PID at the end.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include "agent/agent.h"
#include "common/clock.h"
#include "haproxy/runtime_api.h"
#include "http/http_client.h"
#include "store/slot_store.h"

extern char** environ;

namespace hsdo {
namespace {

// The slot table in memory; each Fill() is a new generation.
class MemoryStore final : public SlotStore {
 public:
  Result<std::uint64_t> ReadGeneration() override { return table_.generation; }
  Result<SlotTable> ReadTable() override { return table_; }
  using SlotStore::WriteSlots;
  Result<std::uint64_t> WriteSlots(std::span<const Slot>, int, std::uint64_t,
                                   const std::optional<HeldRemoval>&) override {
    return MakeError("read-only");
  }
  // Every slot active; `round` changes every address and weight.
  void Fill(int size, int round) {
    const auto generation = table_.generation + 1;
    table_ = SlotTable::Empty(size);
    table_.generation = generation;
    for (auto& slot : table_.slots) {
      slot.status = SlotStatus::kEnabled;
      slot.target.address = fmt::format("10.{}.{}.{}", round % 200, slot.id / 250, slot.id % 250);
      slot.target.name = fmt::format("web-{}", slot.id);
      // The seed's weight range (MIN 1, MAX 10 by default). HAProxy's cost of `state ready`
      // on a consistent-hash backend grows with the weights (see docs/benchmarks.md).
      slot.weight = 1 + (slot.id + round) % 10;
    }
  }
  // Every slot free.
  void Clear(int size) {
    const auto generation = table_.generation + 1;
    table_ = SlotTable::Empty(size);
    table_.generation = generation;
  }

 private:
  SlotTable table_;
};

// A DynamoDB GetItem answer of the size an agent reads every cycle (slot 1 and the table's
// generation), without its headers.
constexpr std::string_view kGetItemBody =
    R"({"Item":{"BackendServerID":{"N":"1"},"IPAddress":{"S":"127.0.0.3"},)"
    R"("ServerName":{"S":"web-1"},"ASG":{"S":"asg-a"},"Weight":{"N":"2"},)"
    R"("BackendServerStatus":{"S":"enabled"},)"
    R"("LastWeightUpdate":{"S":"2026-01-01 00:00:00.000000"},"TableGeneration":{"N":"42"},)"
    R"("LastChange":{"S":"42:1"},"RecentChanges":{"S":"41:2,3;42:1"}}})";

// A loopback TCP port nobody listens on now (the kernel's next ephemeral one).
int FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("no free loopback port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

// HAProxy's config syntax for `text` in double quotes.
std::string Quoted(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + '"';
}

// One HAProxy for the whole run: backends a<N>/b<N> with N = 100 and 1000 template slots, and
// an HTTP frontend that answers every request with kGetItemBody, keeping the connection.
class Haproxy {
 public:
  Haproxy() : http_port_(FreeLoopbackPort()) {
    char dir_template[] = "/tmp/hsdo-bench-XXXXXX";
    if (::mkdtemp(dir_template) == nullptr) throw std::runtime_error("mkdtemp");
    dir_ = dir_template;
    socket_ = dir_ + "/s.sock";
    std::ofstream config(dir_ + "/haproxy.cfg");
    config << "global\n  stats socket " << socket_ << " level admin\n  maxconn 100\n"
           << "defaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n"
           << "  timeout server 5s\n";
    for (const int size : {100, 1000}) {
      for (const char* prefix : {"a", "b"}) {
        config << "backend " << prefix << size << "\n  balance uri\n  hash-type consistent\n"
               << "  server-template srv 1-" << size << " 127.0.0.2:80 disabled\n";
      }
    }
    config << "frontend dynamodb\n  bind 127.0.0.1:" << http_port_ << "\n"
           << "  http-request return status 200 content-type application/x-amz-json-1.0 string "
           << Quoted(kGetItemBody) << "\n";
    config.close();
    const char* bin = std::getenv("HAPROXY_BIN");
    const std::string haproxy = bin != nullptr ? bin : "/usr/sbin/haproxy";
    const std::string cfg = dir_ + "/haproxy.cfg";
    const char* argv[] = {haproxy.c_str(), "-f", cfg.c_str(), "-db", "-q", nullptr};
    if (posix_spawn(&pid_, haproxy.c_str(), nullptr, nullptr, const_cast<char**>(argv), environ) !=
        0) {
      throw std::runtime_error("cannot start " + haproxy);
    }
    api_ = std::make_unique<haproxy::SocketRuntimeApi>(
        *haproxy::SocketEndpoint::Parse(socket_),
        haproxy::SocketRuntimeApiOptions{.io_timeout = std::chrono::seconds(30),
                                         .keep_open = true});
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!api_->Execute({"show info"}).ok()) {
      if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("no socket");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ~Haproxy() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    std::filesystem::remove_all(dir_);
  }
  haproxy::RuntimeApi& api() { return *api_; }
  int http_port() const { return http_port_; }

 private:
  int http_port_;
  std::string dir_;
  std::string socket_;
  pid_t pid_ = -1;
  std::unique_ptr<haproxy::SocketRuntimeApi> api_;
};

Haproxy& SharedHaproxy() {
  static Haproxy haproxy;
  return haproxy;
}

agent::AgentSettings Settings(int size) {
  agent::AgentSettings settings;
  settings.list_size = size;
  settings.backends = {{.config = {.name = fmt::format("a{}", size), .base_name = "srv"}},
                       {.config = {.name = fmt::format("b{}", size), .base_name = "srv"}}};
  return settings;
}

// A full table applied to HAProxy in which every slot is a maint placeholder at another
// address: 3 commands per slot and backend.
void BM_ApplyFullTable(benchmark::State& state) {
  const int size = static_cast<int>(state.range(0));
  auto& haproxy = SharedHaproxy();
  MemoryStore store;
  MetricsRegistry registry;
  SystemClock clock;
  agent::Agent agent(Settings(size), store, haproxy.api(), registry, clock);
  // Shared by every run and repetition: each round differs from what HAProxy holds.
  static int round = 0;
  std::size_t commands = 0;
  for (auto _ : state) {
    state.PauseTiming();
    store.Clear(size);
    if (!agent.RunCycle(true).synced) state.SkipWithError("reset failed");
    store.Fill(size, ++round);
    state.ResumeTiming();
    const auto report = agent.RunCycle(true);
    if (!report.synced || report.command_errors != 0) state.SkipWithError("apply failed");
    commands = report.operations.size();
  }
  state.counters["commands"] = static_cast<double>(commands);
  state.counters["slots"] = size * 2;
}
BENCHMARK(BM_ApplyFullTable)->Arg(100)->Arg(1000)->Unit(benchmark::kMillisecond)->UseRealTime();

// A cycle in which the table did not move and HAProxy already matches it: the steady cycle
// (one `show info`), or with `full_read` 1 the full read that comes every
// HAPROXY_FULL_SYNC_INTERVAL (`show servers state` of both backends, parsed and compared with
// the table, to repair a hand edit).
void BM_NoChangeCycle(benchmark::State& state) {
  const int size = static_cast<int>(state.range(0));
  auto& haproxy = SharedHaproxy();
  MemoryStore store;
  MetricsRegistry registry;
  SystemClock clock;
  auto settings = Settings(size);
  if (state.range(1) != 0) settings.full_sync_interval = std::chrono::milliseconds(0);
  agent::Agent agent(settings, store, haproxy.api(), registry, clock);
  store.Fill(size, 1);
  if (!agent.RunCycle(true).synced) state.SkipWithError("initial apply failed");
  std::size_t commands = 0;
  for (auto _ : state) {
    const auto report = agent.RunCycle(true);
    commands += report.operations.size();
    if (!report.synced) state.SkipWithError("cycle failed");
  }
  if (commands != 0) state.SkipWithError("a no-change cycle sent commands");
  state.counters["commands"] = static_cast<double>(commands);
  state.counters["slots"] = size * 2;
}
BENCHMARK(BM_NoChangeCycle)
    ->ArgNames({"slots", "full_read"})
    ->ArgsProduct({{100, 1000}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The least a steady cycle can cost on this machine, whatever the agent does: the thread
// sleeps until its next tick (20 ms here, INTERVAL in the agent: the same wake-up from idle),
// then, with `show_info`, sends one `show info` on the kept connection and reads the reply (the
// agent's steady cycle without its store read, node report and bookkeeping). CPU time is the
// thread's, kernel time included (the cost of the wake-ups is mostly there).
void BM_IdleWakeFloor(benchmark::State& state) {
  const bool show_info = state.range(0) != 0;
  auto& api = SharedHaproxy().api();
  auto next = std::chrono::steady_clock::now();
  for (auto _ : state) {
    next += std::chrono::milliseconds(20);
    std::this_thread::sleep_until(next);
    if (show_info && !api.Execute({"show info"}).ok()) state.SkipWithError("show info failed");
  }
}
BENCHMARK(BM_IdleWakeFloor)
    ->ArgName("show_info")
    ->Arg(0)
    ->Arg(1)
    ->Iterations(250)
    ->Unit(benchmark::kMicrosecond);

// What a DynamoDB agent's GetItem sends (its size and headers; the signature is not checked).
http::Request GetItemRequest(int port) {
  http::Request request;
  request.method = "POST";
  request.url = fmt::format("http://127.0.0.1:{}/", port);
  request.body =
      R"({"TableName":"hsdo","Key":{"BackendServerID":{"N":"1"}},"ConsistentRead":true})";
  request.headers = {
      {"Content-Type", "application/x-amz-json-1.0"},
      {"X-Amz-Target", "DynamoDB_20120810.GetItem"},
      {"X-Amz-Date", "20261201T120000Z"},
      {"Authorization",
       "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261201/us-east-1/dynamodb/aws4_request, "
       "SignedHeaders=content-type;host;x-amz-date;x-amz-target, "
       "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"}};
  return request;
}

// One request on the kept connection after each wake-up, as a DynamoDB agent's cycle reads the
// table's generation. `curl` 1: through http::MakeCurlHttpClient, the agent's client (libcurl's
// multi interface, the headers parsed, the body kept). `curl` 0: the least the same exchange
// costs on this machine: the same bytes written and the answer read on a bare socket (no
// parsing but the end of the answer). Compare both with BM_IdleWakeFloor/show_info:0.
void BM_StoreReadOverHttp(benchmark::State& state) {
  const bool curl = state.range(0) != 0;
  const int port = SharedHaproxy().http_port();
  const auto request = GetItemRequest(port);
  const auto client = http::MakeCurlHttpClient();
  std::string wire =
      fmt::format("POST / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept: */*\r\nContent-Length: {}\r\n",
                  port, request.body.size());
  for (const auto& [name, value] : request.headers) wire += fmt::format("{}: {}\r\n", name, value);
  wire += "\r\n" + request.body;
  int fd = -1;
  if (!curl) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      state.SkipWithError("connect failed");
    }
  }
  std::string reply(16384, '\0');
  auto next = std::chrono::steady_clock::now();
  for (auto _ : state) {
    next += std::chrono::milliseconds(20);
    std::this_thread::sleep_until(next);
    if (curl) {
      const auto response = client->Send(request);
      if (!response.ok() || response->status != 200 || response->body != kGetItemBody) {
        state.SkipWithError("request failed");
      }
      continue;
    }
    if (::send(fd, wire.data(), wire.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(wire.size())) {
      state.SkipWithError("send failed");
    }
    std::size_t got = 0;
    while (got < kGetItemBody.size() ||
           std::string_view(reply.data(), got).substr(got - kGetItemBody.size()) != kGetItemBody) {
      const auto n = ::recv(fd, reply.data() + got, reply.size() - got, 0);
      if (n <= 0) {
        state.SkipWithError("recv failed");
        break;
      }
      got += static_cast<std::size_t>(n);
    }
  }
  if (fd >= 0) ::close(fd);
}
BENCHMARK(BM_StoreReadOverHttp)
    ->ArgName("curl")
    ->Arg(0)
    ->Arg(1)
    ->Iterations(250)
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace hsdo

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
