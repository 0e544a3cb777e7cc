// Wakeup: how a loop sleeps between cycles. It wakes early when asked to stop (SIGTERM,
// SIGINT) or when a source has news (Consul's blocking queries), so a change reaches the
// store without waiting out the interval.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace hsdo {

class Wakeup {
 public:
  // Waits until Notify(), RequestStop() or `timeout`. Returns false once stop is requested.
  bool WaitFor(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, timeout, [this] { return stop_ || notified_; });
    notified_ = false;
    return !stop_;
  }
  void Notify() {
    {
      std::lock_guard lock(mutex_);
      notified_ = true;
    }
    cv_.notify_all();
  }
  void RequestStop() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
  }
  bool stop_requested() const {
    std::lock_guard lock(mutex_);
    return stop_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool notified_ = false;
};

}  // namespace hsdo
