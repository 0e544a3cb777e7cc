// `hsdo status`: the slot table as an aligned text table or as JSON.
#pragma once

#include <string>

#include "core/slot_table.h"

namespace hsdo {

std::string FormatStatusTable(const SlotTable& table);
std::string FormatStatusJson(const SlotTable& table);

}  // namespace hsdo
