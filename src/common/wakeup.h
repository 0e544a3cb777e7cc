// Wakeup: how a loop sleeps between cycles. It wakes early when asked to stop (SIGTERM,
// SIGINT) or when a source has news (Consul's blocking queries), so a change reaches the
// store without waiting out the interval. Its stop token reaches every request and retry sleep
// of the store and the source (http::Request::cancel, AwsClientOptions::cancel), so a stop
// request also ends a call that is waiting on a peer that never answers.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stop_token>

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
    stop_source_.request_stop();
  }
  // Stopped by RequestStop(): hand it to anything that may block on I/O.
  std::stop_token stop_token() const { return stop_source_.get_token(); }
  bool stop_requested() const {
    std::lock_guard lock(mutex_);
    return stop_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool notified_ = false;
  std::stop_source stop_source_;
};

}  // namespace hsdo
