#include "core/slot_table.h"

#include <algorithm>

#include <fmt/format.h>

#include "common/validate.h"

namespace hsdo {

std::string Target::Key() const {
  if (!port) return address;
  return IsIpv6(address) ? fmt::format("[{}]:{}", address, *port)
                         : fmt::format("{}:{}", address, *port);
}

SlotTable SlotTable::Empty(int size) {
  SlotTable table;
  table.slots.reserve(static_cast<std::size_t>(size));
  for (int id = 1; id <= size; ++id) table.slots.push_back(Slot::Free(id));
  return table;
}

int SlotTable::EnabledCount() const {
  return static_cast<int>(
      std::count_if(slots.begin(), slots.end(), [](const Slot& s) { return s.enabled(); }));
}

}  // namespace hsdo
