// DeferredStore: a slot store that an agent opens on first use, and again at every call until
// it opens. An agent must never create the store (a missing SQLite file or DynamoDB table is
// an error, not an empty table), yet must start working as soon as `hsdo init-table` creates it,
// without a restart: until then every read fails with the opener's error (kNotFound for a
// store that does not exist) and the agent leaves HAProxy as it is.
#pragma once

#include <functional>
#include <memory>

#include "store/slot_store.h"

namespace hsdo {

class DeferredStore final : public SlotStore {
 public:
  using Opener = std::function<Result<std::unique_ptr<SlotStore>>()>;
  explicit DeferredStore(Opener open) : open_(std::move(open)) {}

  Result<std::uint64_t> ReadGeneration() override;
  Result<SlotTable> ReadTable() override;
  using SlotStore::WriteSlots;
  Result<std::uint64_t> WriteSlots(std::span<const Slot> changed, int overflow,
                                   std::uint64_t expected_generation,
                                   const std::optional<HeldRemoval>& hold,
                                   std::uint64_t above) override;
  std::uint64_t Incarnation() override { return store_ ? store_->Incarnation() : 0; }
  void ReadWholeNext() override {
    if (store_) store_->ReadWholeNext();
  }
  // Watches once the store is open; false until then (the agent polls anyway).
  bool Watch(std::function<void()> on_change) override;
  bool WatchSeesEveryWrite() const override { return store_ && store_->WatchSeesEveryWrite(); }
  void Unwatched(const std::function<void()>& write) override {
    store_ ? store_->Unwatched(write) : write();
  }

  // Tries to open the store now (once open, stays open). The opener's error otherwise.
  Result<void> Open();

 private:
  Opener open_;
  std::unique_ptr<SlotStore> store_;
  std::function<void()> on_change_;
};

}  // namespace hsdo
