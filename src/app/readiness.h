// What the orchestrator's /readyz says (the agent's is agent::NotReadyReason): pure, so the
// rule is tested without a clock.
#pragma once

#include <chrono>
#include <string>

namespace hsdo {

// "" (ready) when this orchestrator is not standing by (another one holds the leader lease)
// and its last cycle with a successful discovery after which the store matched the plan
// (`last_ready`, seconds since the epoch, 0 for never) is at most 3 x `interval` old at
// `now`. Otherwise one line saying why not.
std::string OrchestratorNotReadyReason(bool standing_by, double last_ready, double now,
                                       std::chrono::milliseconds interval);

}  // namespace hsdo
