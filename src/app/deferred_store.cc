#include "app/deferred_store.h"

namespace hsdo {

Result<void> DeferredStore::Open() {
  if (store_) return Ok();
  auto store = open_();
  if (!store) return store.error();
  store_ = std::move(*store);
  if (on_change_) store_->Watch(on_change_);
  return Ok();
}

Result<std::uint64_t> DeferredStore::ReadGeneration() {
  if (auto opened = Open(); !opened) return opened.error();
  return store_->ReadGeneration();
}

Result<SlotTable> DeferredStore::ReadTable() {
  if (auto opened = Open(); !opened) return opened.error();
  return store_->ReadTable();
}

Result<std::uint64_t> DeferredStore::WriteSlots(std::span<const Slot> changed, int overflow,
                                                std::uint64_t expected_generation,
                                                const std::optional<HeldRemoval>& hold,
                                                std::uint64_t above) {
  if (auto opened = Open(); !opened) return opened.error();
  return store_->WriteSlots(changed, overflow, expected_generation, hold, above);
}

bool DeferredStore::Watch(std::function<void()> on_change) {
  on_change_ = std::move(on_change);
  return store_ && store_->Watch(on_change_);
}

}  // namespace hsdo
