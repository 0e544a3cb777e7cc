#include "consul/blocking_query.h"

#include <gtest/gtest.h>

namespace hsdo::consul {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(ParseConsulIndex, AcceptsDecimalOnly) {
  EXPECT_EQ(ParseConsulIndex("42"), 42u);
  EXPECT_EQ(ParseConsulIndex(" 7 "), 7u);
  EXPECT_EQ(ParseConsulIndex("18446744073709551615"), 18446744073709551615u);
  EXPECT_EQ(ParseConsulIndex(""), std::nullopt);
  EXPECT_EQ(ParseConsulIndex("-1"), std::nullopt);
  EXPECT_EQ(ParseConsulIndex("12abc"), std::nullopt);
  EXPECT_EQ(ParseConsulIndex("18446744073709551616"), std::nullopt);  // overflow
}

TEST(NextIndex, FollowsConsulsBlockingQueryRules) {
  struct Case {
    const char* what;
    std::uint64_t sent;
    std::optional<std::uint64_t> returned;
    std::uint64_t next;
  };
  const Case cases[] = {
      {"first read takes the returned index", 0, 10, 10},
      {"moved forward", 10, 12, 12},
      {"timed out without change", 12, 12, 12},
      {"went backwards: reset to 0", 12, 5, 0},
      {"after a reset, anything goes", 0, 5, 5},
      {"zero from a fresh read: block on 1", 0, 0, 1},
      {"zero while blocking: block on 1 (Consul answers at once if it is past 1)", 12, 0, 1},
      {"zero again after substituting 1: still 1, no reset", 1, 0, 1},
      {"no header: plain reads", 12, std::nullopt, 0},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(NextIndex(c.sent, c.returned), c.next) << c.what;
  }
}

TEST(FormatWait, UsesGoDurations) {
  EXPECT_EQ(FormatWait(seconds{5}), "5s");
  EXPECT_EQ(FormatWait(milliseconds{1500}), "1500ms");
  EXPECT_EQ(FormatWait(seconds{300}), "300s");
}

TEST(RateLimiter, AllowsABurstThenOnePerInterval) {
  const SteadyTime t0{seconds{1'000}};
  RateLimiter limiter(2, seconds{1});
  EXPECT_EQ(limiter.Reserve(t0), milliseconds{0});
  EXPECT_EQ(limiter.Reserve(t0), milliseconds{0});
  // The burst is spent: the third request at t0 waits one interval, the fourth two.
  EXPECT_EQ(limiter.Reserve(t0), milliseconds{1000});
  EXPECT_EQ(limiter.Reserve(t0 + seconds{1}), milliseconds{1000});
}

TEST(RateLimiter, NeverDelaysRequestsThatBlockedForAWhile) {
  // The happy case: each blocking query lasts longer than the interval.
  SteadyTime now{seconds{1'000}};
  RateLimiter limiter(2, seconds{1});
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(limiter.Reserve(now), milliseconds{0});
    now += milliseconds{1'100};
  }
}

TEST(RateLimiter, RefillsAfterAQuietPeriod) {
  const SteadyTime t0{seconds{1'000}};
  RateLimiter limiter(3, milliseconds{500});
  for (int i = 0; i < 3; ++i) EXPECT_EQ(limiter.Reserve(t0), milliseconds{0});
  EXPECT_GT(limiter.Reserve(t0), milliseconds{0});
  const SteadyTime later = t0 + seconds{10};
  for (int i = 0; i < 3; ++i) EXPECT_EQ(limiter.Reserve(later), milliseconds{0});
}

TEST(Backoff, DoublesUpToTheCapAndResets) {
  Backoff backoff(milliseconds{500}, seconds{4});
  EXPECT_EQ(backoff.Next(), milliseconds{500});
  EXPECT_EQ(backoff.Next(), milliseconds{1000});
  EXPECT_EQ(backoff.Next(), milliseconds{2000});
  EXPECT_EQ(backoff.Next(), milliseconds{4000});
  EXPECT_EQ(backoff.Next(), milliseconds{4000});
  backoff.Reset();
  EXPECT_EQ(backoff.Next(), milliseconds{500});
}

}  // namespace
}  // namespace hsdo::consul
