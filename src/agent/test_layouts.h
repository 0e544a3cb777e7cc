// The backend layouts the agent's model tests draw from (cycle_plan_property_test.cc,
// agent_property_test.cc): one backend, two sharing a port, two of their own ports (each takes
// its port whatever a target's), the AZ limiter (targets of the group "local" in the primary,
// the others in the fallback; or every target in the fallback). README: HAProxy configuration,
// AZ limiter. Test code only.
#pragma once

#include <optional>
#include <vector>

#include "agent/agent.h"
#include "haproxy/az_split.h"

namespace hsdo::agent::test_layouts {

enum class Layout { kOne, kTwoSharedPort, kTwoOwnPorts, kAzLimiter, kAzAllInFallback };
inline constexpr int kLayouts = 5;

inline const char* LayoutName(Layout layout) {
  switch (layout) {
    case Layout::kOne:
      return "one backend be/srv:80";
    case Layout::kTwoSharedPort:
      return "two backends be/srv:80, be2/s:80";
    case Layout::kTwoOwnPorts:
      return "two backends of their own ports web/w:80, api/a:8080";
    case Layout::kAzLimiter:
      return "AZ limiter be/srv:80 (groups: local) + fallback fb/f:80";
    case Layout::kAzAllInFallback:
      return "AZ limiter be/srv:80 (groups: local) + fallback fb/f:80, all in fallback";
  }
  return "";
}

inline bool UsesAzLimiter(Layout layout) {
  return layout == Layout::kAzLimiter || layout == Layout::kAzAllInFallback;
}

// The agent's settings for `layout`: its backends, the AZ limiter's, admission gating and the
// number of slots; everything else at its default.
inline AgentSettings SettingsFor(Layout layout, bool gating, int list_size) {
  std::vector<BackendConfig> primaries;
  std::optional<BackendConfig> fallback;
  switch (layout) {
    case Layout::kOne:
      primaries = {{"be", "srv", 80}};
      break;
    case Layout::kTwoSharedPort:
      primaries = {{"be", "srv", 80}, {"be2", "s", 80}};
      break;
    case Layout::kTwoOwnPorts:
      primaries = {{"web", "w", 80}, {"api", "a", 8080}};
      break;
    case Layout::kAzLimiter:
    case Layout::kAzAllInFallback:
      primaries = {{"be", "srv", 80}};
      fallback = BackendConfig{"fb", "f", 80};
      break;
  }
  AgentSettings settings;
  settings.backends = haproxy::ManagedBackends(primaries, fallback, UsesAzLimiter(layout));
  settings.az_limiter = {.enabled = UsesAzLimiter(layout),
                         .client_groups = {"local"},
                         .all_in_fallback = layout == Layout::kAzAllInFallback};
  settings.admission_gating = gating;
  settings.list_size = list_size;
  return settings;
}

}  // namespace hsdo::agent::test_layouts
