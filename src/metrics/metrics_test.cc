#include <gtest/gtest.h>
#include <prometheus/counter.h>
#include <prometheus/text_serializer.h>

#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <mutex>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "http/http_client.h"
#include "metrics/exporter.h"
#include "metrics/metrics_registry.h"
#include "metrics/slot_metrics.h"

namespace hsdo {
namespace {

std::string Render(prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

Slot Enabled(int id, const char* address, int weight) {
  Slot slot;
  slot.id = id;
  slot.status = SlotStatus::kEnabled;
  slot.target.address = address;
  slot.target.name = "web";
  slot.target.group = "asg-a";
  slot.weight = weight;
  return slot;
}

TEST(SlotWeightMetrics, LabelsWithQuotesAndBackslashesAreEscaped) {
  MetricsRegistry registry;
  SlotWeightMetrics metrics(registry);
  auto table = SlotTable::Empty(1);
  table.slots[0] = Enabled(1, "10.0.0.1", 4);
  table.slots[0].target.name = R"(web "1" \ x)";
  table.slots[0].target.group = "web asg";
  metrics.Update(table);
  const auto text = Render(registry);
  EXPECT_NE(
      text.find(
          R"(hsdo_server_weight{asg="web asg",id="1",ip="10.0.0.1",name="web \"1\" \\ x"} 4)"),
      std::string::npos)
      << text;
}

TEST(SlotWeightMetrics, OneSeriesPerEnabledSlot) {
  MetricsRegistry registry;
  SlotWeightMetrics metrics(registry);
  auto table = SlotTable::Empty(3);
  table.slots[0] = Enabled(1, "10.0.0.1", 4);
  table.slots[2] = Enabled(3, "10.0.0.3", 7);
  metrics.Update(table);
  auto text = Render(registry);
  EXPECT_NE(text.find(R"(hsdo_server_weight{asg="asg-a",id="1",ip="10.0.0.1",name="web"} 4)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(R"(id="3",ip="10.0.0.3")"), std::string::npos) << text;

  table.slots[0] = Slot::Free(1);
  table.slots[2] = Enabled(3, "10.0.0.9", 8);
  metrics.Update(table);
  text = Render(registry);
  EXPECT_EQ(text.find(R"(id="1")"), std::string::npos) << text;
  EXPECT_EQ(text.find("10.0.0.3"), std::string::npos) << text;
  EXPECT_NE(text.find(R"(id="3",ip="10.0.0.9",name="web"} 8)"), std::string::npos) << text;
}

// The series of `table` as the exposition shows them, one line each, sorted.
std::vector<std::string> Series(prometheus::Registry& registry) {
  std::vector<std::string> lines;
  std::istringstream text(Render(registry));
  for (std::string line; std::getline(text, line);) {
    if (line.starts_with("hsdo_server_weight{")) lines.push_back(line);
  }
  std::sort(lines.begin(), lines.end());
  return lines;
}

// An orchestrator updates only the slots it wrote: the series are exactly those a full update
// of a fresh family shows, whether few or many changed.
TEST(SlotWeightMetrics, UpdatesOfTheChangedSlotsOnlyShowWhatAFullUpdateShows) {
  constexpr int kSlots = 1000;
  auto table = SlotTable::Empty(kSlots);
  for (int id = 1; id <= kSlots; ++id) {
    table.slots[static_cast<std::size_t>(id - 1)] =
        Enabled(id, fmt::format("10.0.{}.{}", id / 200, id % 200).c_str(), id % 10 + 1);
  }
  MetricsRegistry registry;
  SlotWeightMetrics metrics(registry);
  metrics.Update(table);
  for (const std::size_t changes : {std::size_t{3}, std::size_t{200}}) {
    std::vector<int> changed;
    for (std::size_t i = 0; i < changes; ++i) {
      const int id = static_cast<int>(i * 3 + 1);
      Slot& slot = table.slots[static_cast<std::size_t>(id - 1)];
      if (i % 3 == 0) {
        slot = Slot::Free(id);
      } else {
        slot.target.address = fmt::format("10.1.{}.{}", changes % 200, id % 200);
        slot.weight = 9;
      }
      changed.push_back(id);
    }
    table.slots[1].weight = 1;  // and one weight, without a new series
    changed.push_back(2);
    metrics.Update(table, changed);

    MetricsRegistry fresh;
    SlotWeightMetrics expected(fresh);
    expected.Update(table);
    EXPECT_EQ(Series(registry), Series(fresh)) << changes << " changes";
    const std::string text = Render(registry);
    EXPECT_EQ(text.find("# TYPE hsdo_server_weight"), text.rfind("# TYPE hsdo_server_weight"));
  }
}

// A scrape during an update sees the table before it or after it, never a mix or a family
// with series missing (prometheus-cpp's families change one series at a time).
TEST(SlotWeightMetrics, AScrapeSeesAnUpdateWholeOrNotAtAll) {
  constexpr int kSlots = 500;
  auto table_of = [](int weight) {
    auto table = SlotTable::Empty(kSlots);
    for (int id = 1; id <= kSlots; ++id) {
      table.slots[static_cast<std::size_t>(id - 1)] =
          Enabled(id, fmt::format("10.{}.{}.{}", weight, id / 200, id % 200).c_str(), weight);
    }
    return table;
  };
  const SlotTable one = table_of(1);
  const SlotTable two = table_of(2);
  MetricsRegistry registry;
  SlotWeightMetrics metrics(registry);
  metrics.Update(one);
  std::atomic<bool> done{false};
  std::vector<std::string> torn;
  std::atomic<int> scrapes{0};
  std::thread scraper([&] {
    while (!done) {
      const auto lines = Series(registry);
      ++scrapes;
      const auto ones = std::count_if(lines.begin(), lines.end(),
                                      [](const std::string& line) { return line.ends_with(" 1"); });
      if (lines.size() != kSlots || (ones != 0 && ones != kSlots)) {
        torn.push_back(fmt::format("{} series, {} of weight 1", lines.size(), ones));
      }
    }
  });
  for (int round = 0; round < 50 || scrapes < 20; ++round) {
    metrics.Update(round % 2 == 0 ? two : one);
  }
  done = true;
  scraper.join();
  EXPECT_TRUE(torn.empty()) << torn.size() << " of " << scrapes << " scrapes, e.g. " << torn[0];
}

// What an attached collectable gives comes after the registry's own families, and only while
// it lives.
TEST(MetricsRegistry, CollectsAttachedFamiliesWhileTheyLive) {
  MetricsRegistry registry;
  prometheus::BuildCounter().Name("hsdo_own_total").Help("own").Register(registry).Add({});
  auto table = SlotTable::Empty(1);
  table.slots[0] = Enabled(1, "10.0.0.1", 4);
  {
    SlotWeightMetrics metrics(registry);
    metrics.Update(table);
    const auto families = registry.Collect();
    ASSERT_EQ(families.size(), 2u);
    EXPECT_EQ(families[0].name, "hsdo_own_total");
    EXPECT_EQ(families[1].name, "hsdo_server_weight");
  }
  const auto families = registry.Collect();
  ASSERT_EQ(families.size(), 1u);
  EXPECT_EQ(families[0].name, "hsdo_own_total");
}

TEST(SlotWeightMetrics, SlotWithAnInvalidAddressIsNeverExported) {
  MetricsRegistry registry;
  SlotWeightMetrics metrics(registry);
  auto table = SlotTable::Empty(2);
  table.slots[0] = Enabled(1, "1.2.3.4; shutdown sessions server be/srv1", 4);
  table.slots[1] = Enabled(2, "10.0.0.2", 5);
  metrics.Update(table);
  const auto text = Render(registry);
  EXPECT_EQ(text.find("shutdown"), std::string::npos) << text;
  EXPECT_NE(text.find(R"(id="2")"), std::string::npos) << text;
}

std::uint16_t FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

TEST(Exporter, ServesMetricsAndHealth) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter()
      .Name("hsdo_test_total")
      .Help("t")
      .Register(*registry)
      .Add({})
      .Increment();
  std::atomic<bool> healthy{true};
  const auto port = FreePort();
  auto exporter = Exporter::Start("127.0.0.1", port, registry, [&] { return healthy.load(); });
  ASSERT_TRUE(exporter.ok()) << exporter.error().message;
  auto client = http::MakeCurlHttpClient();
  const auto base = "http://127.0.0.1:" + std::to_string(port);
  auto metrics = client->Send({.url = base + "/metrics"});
  ASSERT_TRUE(metrics.ok()) << metrics.error().message;
  EXPECT_EQ(metrics->status, 200);
  EXPECT_NE(metrics->body.find("hsdo_test_total 1"), std::string::npos) << metrics->body;
  EXPECT_EQ(client->Send({.url = base + "/healthz"})->status, 200);
  healthy = false;
  EXPECT_EQ(client->Send({.url = base + "/healthz"})->status, 503);
  // A second exporter on the same port fails clearly.
  auto second = Exporter::Start("127.0.0.1", port, registry, nullptr);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.error().message.find(std::to_string(port)), std::string::npos);
}

// Connects to 127.0.0.1:port, sends `request`, and returns everything the exporter answers
// until it closes the connection (at most `limit`).
std::string Exchange(std::uint16_t port, const std::string& request,
                     std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval timeout{.tv_sec = static_cast<time_t>(limit.count() / 1000),
                  .tv_usec = static_cast<suseconds_t>(limit.count() % 1000 * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  if (!request.empty()) ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string answer;
  char buffer[4096];
  for (int i = 0; i < 1000; ++i) {
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    answer.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return answer;
}

TEST(Exporter, AnswersBadRequestsAndClosesEveryConnection) {
  auto registry = std::make_shared<prometheus::Registry>();
  const auto port = FreePort();
  auto exporter = Exporter::Start("127.0.0.1", port, registry, [] { return true; });
  ASSERT_TRUE(exporter.ok()) << exporter.error().message;
  EXPECT_EQ(Exchange(port, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n").substr(0, 12),
            "HTTP/1.1 404");
  EXPECT_EQ(Exchange(port, "POST /metrics HTTP/1.1\r\n\r\n").substr(0, 12), "HTTP/1.1 405");
  EXPECT_EQ(Exchange(port, "nonsense\r\n\r\n").substr(0, 12), "HTTP/1.1 400");
  EXPECT_EQ(Exchange(port, "GET /metrics HTTP/1.1\r\nX: " + std::string(10000, 'a')).substr(0, 12),
            "HTTP/1.1 431");
  const auto head = Exchange(port, "HEAD /healthz?x=1 HTTP/1.0\r\n\r\n");
  EXPECT_EQ(head.substr(0, 12), "HTTP/1.1 200");
  EXPECT_NE(head.find("Content-Length: 3\r\n"), std::string::npos) << head;
  EXPECT_EQ(head.find("ok"), std::string::npos) << head;  // no body for HEAD
}

TEST(Exporter, ClosesAConnectionThatDoesNotSendItsRequestInTime) {
  auto registry = std::make_shared<prometheus::Registry>();
  const auto port = FreePort();
  auto exporter = Exporter::Start("127.0.0.1", port, registry, [] { return true; });
  ASSERT_TRUE(exporter.ok()) << exporter.error().message;
  const auto start = std::chrono::steady_clock::now();
  // Half a request line, then nothing: closed at the header deadline, without an answer.
  EXPECT_EQ(Exchange(port, "GET /metr", Exporter::kHeaderTimeout * 3), "");
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_GE(elapsed, Exporter::kHeaderTimeout - std::chrono::milliseconds(100));
  EXPECT_LT(elapsed, Exporter::kHeaderTimeout * 2);
}

// Found in review: out of file descriptors, a waiting connection kept the listener readable
// and the exporter polled and failed to accept again at once: a core at 100 % for as long as
// it lasted, beside HAProxy. It rests between tries, and answers once descriptors are back.
TEST(Exporter, OutOfDescriptorsItRestsAndAnswersOnceTheyAreBack) {
  auto registry = std::make_shared<prometheus::Registry>();
  const auto port = FreePort();
  auto exporter = Exporter::Start("127.0.0.1", port, registry, [] { return true; });
  ASSERT_TRUE(exporter.ok()) << exporter.error().message;
  const int client = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(client, 0);
  rlimit before{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &before), 0);
  const int lowest_free = ::dup(0);
  ::close(lowest_free);
  const rlimit none_left{.rlim_cur = static_cast<rlim_t>(lowest_free), .rlim_max = before.rlim_max};
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &none_left), 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const int connected = ::connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  const auto cpu = [] {
    timespec t{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return std::chrono::seconds(t.tv_sec) + std::chrono::nanoseconds(t.tv_nsec);
  };
  const auto cpu_before = cpu();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto spent = cpu() - cpu_before;
  ::setrlimit(RLIMIT_NOFILE, &before);
  ASSERT_EQ(connected, 0);
  EXPECT_LT(spent, std::chrono::milliseconds(200))
      << std::chrono::duration_cast<std::chrono::milliseconds>(spent).count() << " ms of CPU";
  const std::string request = "GET /healthz HTTP/1.0\r\n\r\n";
  ::send(client, request.data(), request.size(), MSG_NOSIGNAL);
  char buffer[256];
  const ssize_t n = ::recv(client, buffer, sizeof(buffer), 0);
  ::close(client);
  ASSERT_GT(n, 12);
  EXPECT_EQ(std::string(buffer, 12), "HTTP/1.1 200");
}

TEST(Exporter, ReadyzAnswersTheReadinessCheck) {
  auto registry = std::make_shared<prometheus::Registry>();
  const auto port = FreePort();
  auto exporter = Exporter::Start("127.0.0.1", port, registry, [] { return true; });
  ASSERT_TRUE(exporter.ok()) << exporter.error().message;
  auto client = http::MakeCurlHttpClient();
  const auto readyz = "http://127.0.0.1:" + std::to_string(port) + "/readyz";
  auto before = client->Send({.url = readyz});
  ASSERT_TRUE(before.ok()) << before.error().message;
  EXPECT_EQ(before->status, 503);
  EXPECT_EQ(before->body, "starting\n");

  std::mutex mutex;
  std::string reason = "store not found: no SQLite store at /x";
  (*exporter)->SetReadiness([&] {
    std::lock_guard lock(mutex);
    return reason;
  });
  auto not_ready = client->Send({.url = readyz});
  EXPECT_EQ(not_ready->status, 503);
  EXPECT_EQ(not_ready->body, "store not found: no SQLite store at /x\n");
  {
    std::lock_guard lock(mutex);
    reason.clear();
  }
  auto ready = client->Send({.url = readyz});
  EXPECT_EQ(ready->status, 200);
  EXPECT_EQ(ready->body, "ready\n");
  // /healthz is unaffected.
  EXPECT_EQ(client->Send({.url = "http://127.0.0.1:" + std::to_string(port) + "/healthz"})->status,
            200);
}

}  // namespace
}  // namespace hsdo
