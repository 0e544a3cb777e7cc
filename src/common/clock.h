// Time sources. Nothing in the core reads the clock directly: a Clock is injected, and
// tests run on a FakeClock.
#pragma once

#include <chrono>
#include <mutex>

namespace hsdo {

using WallTime = std::chrono::system_clock::time_point;
using SteadyTime = std::chrono::steady_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual WallTime Now() const = 0;
  // For waits and schedules: never steps when the wall clock is set (NTP, an operator).
  virtual SteadyTime Steady() const = 0;
};

class SystemClock final : public Clock {
 public:
  WallTime Now() const override { return std::chrono::system_clock::now(); }
  SteadyTime Steady() const override { return std::chrono::steady_clock::now(); }
};

class FakeClock final : public Clock {
 public:
  explicit FakeClock(WallTime start = WallTime{std::chrono::seconds{1'700'000'000}})
      : now_(start) {}
  WallTime Now() const override {
    std::lock_guard lock(mutex_);
    return now_;
  }
  SteadyTime Steady() const override {
    std::lock_guard lock(mutex_);
    return steady_;
  }
  // Time passes: both clocks move.
  void Advance(std::chrono::microseconds by) {
    std::lock_guard lock(mutex_);
    now_ += by;
    steady_ += by;
  }
  // The wall clock is set (a step): the steady clock does not move.
  void Set(WallTime to) {
    std::lock_guard lock(mutex_);
    now_ = to;
  }

 private:
  mutable std::mutex mutex_;
  WallTime now_;
  SteadyTime steady_{std::chrono::hours(1)};
};

}  // namespace hsdo
