// Sleeps that a stop ends at once: SIGTERM must stop hsdo within a second, whatever it waits
// for (a retry's backoff, a file to hold still, a delayed stop).
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stop_token>

namespace hsdo {

// Sleeps for `duration`, or until `stop` is requested. Returns false when it was.
inline bool SleepUnlessStopped(std::chrono::milliseconds duration, const std::stop_token& stop) {
  std::mutex mutex;
  std::condition_variable_any never_notified;
  std::unique_lock lock(mutex);
  never_notified.wait_for(lock, stop, duration, [] { return false; });
  return !stop.stop_requested();
}

// Waits until `stop` is requested.
inline void WaitUntilStopped(const std::stop_token& stop) {
  std::mutex mutex;
  std::condition_variable_any never_notified;
  std::unique_lock lock(mutex);
  never_notified.wait(lock, stop, [] { return false; });
}

}  // namespace hsdo
