// hsdo's version (the project's, from CMakeLists.txt): `hsdo --version`, hsdo_build_info, and
// each agent's node report, so that `hsdo status --fleet` shows which version each node runs.
#pragma once

#include <string_view>

namespace hsdo {

inline constexpr std::string_view kVersion = HSDO_VERSION;

}  // namespace hsdo
