#include "core/slot_table.h"

#include <algorithm>

#include "common/validate.h"

namespace hsdo {

std::string Target::Key() const {
  if (!port) return address;
  const std::string number = std::to_string(*port);
  return IsIpv6(address) ? "[" + address + "]:" + number : address + ":" + number;
}

SlotTable SlotTable::Empty(int size) {
  SlotTable table;
  table.slots.reserve(static_cast<std::size_t>(size));
  for (int id = 1; id <= size; ++id) table.slots.push_back(Slot::Free(id));
  return table;
}

int SlotTable::HighestBeyond() const {
  int highest = 0;
  for (const Slot& slot : beyond) highest = std::max(highest, slot.id);
  return highest;
}

int SlotTable::EnabledCount() const {
  return static_cast<int>(
      std::count_if(slots.begin(), slots.end(), [](const Slot& s) { return s.enabled(); }));
}

}  // namespace hsdo
