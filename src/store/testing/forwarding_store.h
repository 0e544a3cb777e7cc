// ForwardingStore: a SlotStore that passes every call to another one. Tests derive from it and
// override what they count, delay or break.
#pragma once

#include <functional>
#include <optional>
#include <span>

#include "store/slot_store.h"

namespace hsdo::testing {

class ForwardingStore : public SlotStore {
 public:
  explicit ForwardingStore(SlotStore& inner) : inner_(inner) {}

  Result<std::uint64_t> ReadGeneration() override { return inner_.ReadGeneration(); }
  std::uint64_t Incarnation() override { return inner_.Incarnation(); }
  Result<SlotTable> ReadTable() override { return inner_.ReadTable(); }
  void ReadWholeNext() override { inner_.ReadWholeNext(); }
  using SlotStore::WriteSlots;
  Result<std::uint64_t> WriteSlots(std::span<const Slot> changed, int overflow,
                                   std::uint64_t expected, const std::optional<HeldRemoval>& hold,
                                   std::uint64_t above) override {
    return inner_.WriteSlots(changed, overflow, expected, hold, above);
  }
  bool Watch(std::function<void()> on_change) override {
    return inner_.Watch(std::move(on_change));
  }
  bool WatchSeesEveryWrite() const override { return inner_.WatchSeesEveryWrite(); }
  void Unwatched(const std::function<void()>& write) override { inner_.Unwatched(write); }
  Result<std::optional<Lease>> ReadLease() override { return inner_.ReadLease(); }
  Result<void> WriteLease(const Lease& lease,
                          std::optional<std::uint64_t> expected_version) override {
    return inner_.WriteLease(lease, expected_version);
  }
  void SetFence(std::optional<Fence> fence, std::function<void()> on_fenced) override {
    inner_.SetFence(std::move(fence), std::move(on_fenced));
  }

 protected:
  SlotStore& inner_;
};

}  // namespace hsdo::testing
