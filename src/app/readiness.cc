#include "app/readiness.h"

#include <fmt/format.h>

namespace hsdo {

std::string OrchestratorNotReadyReason(bool standing_by, double last_ready, double now,
                                       std::chrono::milliseconds interval) {
  if (standing_by) {
    return "standing by: this orchestrator does not hold the leader lease (another does, or it "
           "cannot be taken: see the log)";
  }
  if (last_ready <= 0) {
    return "no successful cycle yet: discovery has not answered, or the store does not match "
           "the plan";
  }
  const double window = 3 * std::chrono::duration<double>(interval).count();
  const double age = now - last_ready;
  if (age <= window) return {};
  return fmt::format(
      "last successful cycle {:.1f} s ago (over 3 x INTERVAL = {:.1f} s): discovery or the "
      "store is failing",
      age, window);
}

}  // namespace hsdo
