// The seed stores LastWeightUpdate as Python's str(datetime): "YYYY-MM-DD HH:MM:SS.ffffff",
// and "0-0-0 00:00:00.000000" for a free slot. hsdo writes UTC in that form.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/clock.h"

namespace hsdo {

inline constexpr std::string_view kFreeSlotTime = "0-0-0 00:00:00.000000";

std::string FormatPythonDatetime(WallTime time);

// Accepts the form above, with or without the fraction (Python omits it when the
// microseconds are 0). The free-slot marker and anything malformed give nullopt.
std::optional<WallTime> ParsePythonDatetime(std::string_view text);

}  // namespace hsdo
