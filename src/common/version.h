// hsdo's version: `hsdo --version`, hsdo_build_info, and each agent's node report, so that
// `hsdo status --fleet` shows which version each node runs. The project's (CMakeLists.txt),
// and in a git checkout "+g" and the commit built (".dirty" with changes): every build said
// 0.1.0, and the nodes an upgrade had left could not be told apart (review of upgrades).
// Defined in a file cmake/version.cmake writes at build time.
#pragma once

#include <string_view>

namespace hsdo {

extern const std::string_view kVersion;

}  // namespace hsdo
