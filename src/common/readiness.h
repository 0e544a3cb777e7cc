// Readiness: whether a loop is doing its job right now, for the exporter's /readyz. The loop
// sets a reason when it is not ready ("" when it is); the exporter's threads read it.
#pragma once

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
  }
  // "" when ready, else why not.
  std::string Reason() const {
    std::lock_guard lock(mutex_);
    return reason_;
  }

 private:
  mutable std::mutex mutex_;
  std::string reason_;
};

}  // namespace hsdo
