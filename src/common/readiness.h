// Readiness: whether a loop is doing its job right now, for the exporter's /readyz. The loop
// sets a reason when it is not ready ("" when it is) at the end of every cycle; the exporter's
// threads read it, and a reason not set for too long says the loop is stuck.
#pragma once

#include <chrono>
#include <mutex>
#include <string>

namespace hsdo {

class Readiness {
 public:
  explicit Readiness(std::string initial = "starting") { Set(std::move(initial)); }

  // "" marks ready. The reason is kept to one line of printable text (it may carry a peer's
  // error message): control characters become spaces.
  void Set(std::string reason) {
    for (char& c : reason) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
    }
    std::lock_guard lock(mutex_);
    reason_ = std::move(reason);
    set_at_ = std::chrono::steady_clock::now();
  }
  // "" when ready, else why not.
  std::string Reason() const {
    std::lock_guard lock(mutex_);
    return reason_;
  }
  // Whether the reason was last set more than `stale_after` before `now`: the loop is stuck.
  bool Stale(std::chrono::steady_clock::time_point now,
             std::chrono::milliseconds stale_after) const {
    std::lock_guard lock(mutex_);
    return now - set_at_ > stale_after;
  }
  // The reason, unless it is stale: then why the loop looks stuck (its last ready would
  // otherwise stand for ever).
  std::string Reason(std::chrono::steady_clock::time_point now,
                     std::chrono::milliseconds stale_after) const {
    std::lock_guard lock(mutex_);
    if (now - set_at_ > stale_after) {
      return "no cycle ended in the last " +
             std::to_string(
                 std::chrono::duration_cast<std::chrono::seconds>(now - set_at_).count()) +
             " s (stuck?)";
    }
    return reason_;
  }

 private:
  mutable std::mutex mutex_;
  std::string reason_;
  std::chrono::steady_clock::time_point set_at_;
};

}  // namespace hsdo
