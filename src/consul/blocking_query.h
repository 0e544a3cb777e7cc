// The client side of Consul's blocking queries, as pure logic over plain values (no I/O, no
// clock reads): which index to send next, how fast a watch may loop, how long to back off
// after an error. Rules from Consul's HTTP API documentation, "Blocking Queries".
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/clock.h"

namespace hsdo::consul {

// The X-Consul-Index header as a number, or nullopt when absent or not a decimal integer.
std::optional<std::uint64_t> ParseConsulIndex(std::string_view header);

// The `index` to send on the next request, given the one just sent and the X-Consul-Index
// that came back:
//  - no usable header: 0 (a plain read; the rate limiter keeps that from spinning);
//  - an index of 0 (a Consul bug the documentation warns about): 1, because an index of 0
//    would not block and the loop would spin, while 1 is documented to be always safe;
//  - the index went backwards (snapshot restore, a new leader with other indexes): 0, which
//    restarts the blocking loop with a fresh read, as Consul's documentation requires;
//  - otherwise the returned index.
std::uint64_t NextIndex(std::uint64_t sent, std::optional<std::uint64_t> returned);

// Consul's `wait` parameter: whole seconds as "5s", anything else as "1500ms" (Go durations).
std::string FormatWait(std::chrono::milliseconds wait);

// A token bucket (as the generic cell rate algorithm: no floating point) that lets a few
// requests go at once and then one per `interval`. Consul's documentation asks blocking
// loops to rate-limit rather than sleep on every iteration: in the happy case (changes are
// rare, each request blocks) it never delays; when the index churns, or returns at once
// without change, the loop degrades into polling once per `interval` instead of spinning.
class RateLimiter {
 public:
  RateLimiter(int burst, std::chrono::milliseconds interval);

  // Reserves the next request at or after `now`; returns how long to wait before sending.
  // Steady time: a wall clock set back would hold the next request for as long.
  std::chrono::milliseconds Reserve(SteadyTime now);

 private:
  std::chrono::microseconds interval_;
  std::chrono::microseconds tolerance_;  // (burst - 1) * interval
  std::optional<SteadyTime> theoretical_arrival_;
};

// Exponential backoff, doubling from `initial` up to `max`, back to `initial` on Reset().
// No jitter: one orchestrator watches a handful of services, so there is no herd to spread,
// and deterministic delays keep the tests exact.
class Backoff {
 public:
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max);
  std::chrono::milliseconds Next();
  void Reset() { next_ = initial_; }

 private:
  std::chrono::milliseconds initial_;
  std::chrono::milliseconds max_;
  std::chrono::milliseconds next_;
};

}  // namespace hsdo::consul
