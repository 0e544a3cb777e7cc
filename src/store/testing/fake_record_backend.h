// FakeRecordBackend: the one fake of RecordBackend, in memory, with the faults a real store
// has: an answer lost after the write was applied (or before), a conflicting write from
// elsewhere, reads that are not snapshots (a ReadAll lets writes in between records) and
// that return records in any order. It keeps the table of every generation it ever held so
// that tests can check what a reader returned against what was stored.
#pragma once

#include <algorithm>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "store/record_backend.h"
#include "store/seed_record.h"

namespace hsdo::testing {

class FakeRecordBackend final : public RecordBackend {
 public:
  struct Faults {
    double lose_answer = 0;   // applied, then kUnavailable
    double lose_request = 0;  // not applied, kUnavailable
    double conflict = 0;      // another writer bumps the generation first
    bool interleave = false;  // ReadAll yields between records, in random order
  };
  using Table = std::map<int, Record>;

  explicit FakeRecordBackend(std::size_t max_records_per_write = 0, std::uint32_t seed = 1)
      : max_records_(max_records_per_write), random_(seed) {
    history_[0] = records_;
  }

  // --- RecordBackend
  std::string Describe() const override { return "fake store"; }

  Result<std::optional<Record>> Get(int id, const std::vector<std::string>& projection,
                                    bool consistent) override {
    std::lock_guard lock(mutex_);
    ++gets_;
    ++requests_;
    if (!consistent) ++eventual_gets_;
    const auto it = records_.find(id);
    if (it == records_.end()) return std::optional<Record>();
    Record record = it->second;
    if (!projection.empty()) {
      std::erase_if(record, [&](const auto& entry) {
        return std::find(projection.begin(), projection.end(), entry.first) == projection.end();
      });
    }
    return std::optional<Record>(std::move(record));
  }

  Result<std::vector<Record>> ReadAll() override {
    std::vector<int> ids;
    {
      std::lock_guard lock(mutex_);
      ++read_alls_;
      ++requests_;
      if (bumps_during_read_all_ > 0) {
        --bumps_during_read_all_;
        BumpLocked();
      }
      for (const auto& [id, record] : records_) ids.push_back(id);
      if (faults_.interleave) std::shuffle(ids.begin(), ids.end(), random_);
    }
    return ReadEach(ids);
  }

  // One request (DynamoDB's BatchGetItem), each record read on its own: writes may land in
  // between.
  Result<std::vector<Record>> GetMany(const std::vector<int>& ids) override {
    {
      std::lock_guard lock(mutex_);
      ++requests_;
    }
    return ReadEach(ids);
  }

  // One request, all records under one lock (DynamoDB's TransactGetItems); unless turned off
  // with set_snapshot_gets(false), for the engine's other path.
  std::size_t MaxSnapshotGet() const override { return snapshot_gets_ ? 100 : 0; }
  Result<std::vector<Record>> GetSnapshot(const std::vector<int>& ids) override {
    std::lock_guard lock(mutex_);
    ++requests_;
    ++snapshot_gets_done_;
    if (!snapshot_gets_ || ids.size() > 100) {
      return MakeError(ErrorCode::kInvalidArgument, "no snapshot get of {} ids", ids.size());
    }
    if (Roll(faults_.lose_request)) return MakeError(ErrorCode::kUnavailable, "request lost");
    std::vector<Record> records;
    for (const int id : ids) {
      if (const auto it = records_.find(id); it != records_.end()) records.push_back(it->second);
    }
    std::shuffle(records.begin(), records.end(), random_);
    return records;
  }

  Result<void> Write(const ConditionalWrite& write) override {
    auto written = WriteLocked(write);
    if (written && on_write) on_write();  // unlocked: it may read
    return written;
  }
  // Called after each write that landed: a reader between two writes of a chain.
  std::function<void()> on_write;

  Result<void> WriteLocked(const ConditionalWrite& write) {
    std::lock_guard lock(mutex_);
    ++write_calls_;
    ++requests_;
    if (max_records_ != 0 && write.puts.size() > max_records_) {
      return MakeError(ErrorCode::kInvalidArgument, "too many records");
    }
    if (Roll(faults_.lose_request)) return MakeError(ErrorCode::kUnavailable, "request lost");
    if (Roll(faults_.conflict)) BumpLocked();
    if (StoredGenerationLocked() != write.expected_generation) {
      return MakeError(ErrorCode::kConflict, "generation is {}", StoredGenerationLocked());
    }
    if (write.fence &&
        (!lease_ || lease_->holder != write.fence->holder || lease_->epoch != write.fence->epoch)) {
      ++fenced_out_;
      return MakeError(ErrorCode::kConflict, "fenced out");
    }
    for (const Record& record : write.puts) {
      const int id = static_cast<int>(*ParseInteger(record.at(std::string(attr::kId))));
      Record stored = record;
      if (id == 1) KeepMeta(stored);
      records_[id] = std::move(stored);
    }
    if (!records_.contains(1)) records_[1] = write.free_record_1;
    Record& first = records_[1];
    first.insert_or_assign(
        std::string(attr::kGeneration),
        AttributeValue::Number(static_cast<std::int64_t>(write.next_generation)));
    first.insert_or_assign(std::string(attr::kOverflow), AttributeValue::Number(write.overflow));
    if (!write.last_change.empty()) {
      first.insert_or_assign(std::string(attr::kLastChange),
                             AttributeValue::String(write.last_change));
    }
    if (!write.recent_changes.empty()) {
      first.insert_or_assign(std::string(attr::kRecentChanges),
                             AttributeValue::String(write.recent_changes));
    }
    if (write.removal_hold && write.removal_hold->empty()) {
      first.erase(std::string(attr::kRemovalHold));
    } else if (write.removal_hold) {
      first.insert_or_assign(std::string(attr::kRemovalHold),
                             AttributeValue::String(*write.removal_hold));
    }
    applied_.push_back(write);
    history_[write.next_generation] = records_;
    if (Roll(faults_.lose_answer)) return MakeError(ErrorCode::kUnavailable, "answer lost");
    return Ok();
  }

  std::size_t MaxRecordsPerWrite() const override { return max_records_; }

  Result<std::optional<Lease>> ReadLease() override {
    std::lock_guard lock(mutex_);
    ++lease_reads_;
    return lease_;
  }
  Result<void> WriteLease(const Lease& lease,
                          std::optional<std::uint64_t> expected_version) override {
    std::lock_guard lock(mutex_);
    const auto version = lease_ ? std::optional<std::uint64_t>(lease_->version) : std::nullopt;
    if (version != expected_version) return MakeError(ErrorCode::kConflict, "lease changed");
    lease_ = lease;
    return Ok();
  }

  // --- test controls
  // Set before the fake is shared with other threads.
  void set_snapshot_gets(bool on) { snapshot_gets_ = on; }
  void set_faults(Faults faults) {
    std::lock_guard lock(mutex_);
    faults_ = faults;
  }
  // Stores `record` as is (a hostile or foreign write), without touching the generation.
  void Put(int id, Record record) {
    std::lock_guard lock(mutex_);
    records_[id] = std::move(record);
    history_[StoredGenerationLocked()] = records_;
  }
  // A backup of `generation` restored in place: the records it had, lease aside.
  void RestoreTo(std::uint64_t generation) {
    std::lock_guard lock(mutex_);
    records_ = history_.at(generation);
  }
  // The store wiped (a DynamoDB table deleted and created again): no record, no lease.
  void Wipe() {
    std::lock_guard lock(mutex_);
    records_.clear();
    history_.clear();
    lease_.reset();
  }
  // Another writer: bumps the generation without changing any slot.
  void Bump() {
    std::lock_guard lock(mutex_);
    BumpLocked();
  }
  // The next ReadAll runs `write` (another writer, on a SharedRecordBackend) once it has read
  // its first record: a read that is not a snapshot sees part of that write.
  void WriteAfterFirstRecordOfNextReadAll(std::function<void()> write) {
    std::lock_guard lock(mutex_);
    write_after_first_record_ = std::move(write);
  }
  // The next `count` ReadAll calls each race a write from elsewhere (a generation bump).
  void BumpDuringNextReadAlls(int count) {
    std::lock_guard lock(mutex_);
    bumps_during_read_all_ = count;
  }

  Table records() const {
    std::lock_guard lock(mutex_);
    return records_;
  }
  // The stored table at each generation it ever had.
  std::map<std::uint64_t, Table> history() const {
    std::lock_guard lock(mutex_);
    return history_;
  }
  std::optional<Table> At(std::uint64_t generation) const {
    std::lock_guard lock(mutex_);
    const auto it = history_.find(generation);
    return it == history_.end() ? std::nullopt : std::optional<Table>(it->second);
  }
  std::vector<ConditionalWrite> applied() const {
    std::lock_guard lock(mutex_);
    return applied_;
  }
  int gets() const { return gets_; }
  int snapshot_gets() const {
    std::lock_guard lock(mutex_);
    return snapshot_gets_done_;
  }
  // Every call that would be one request to a real store (Get, GetMany, ReadAll, Write).
  int requests() const {
    std::lock_guard lock(mutex_);
    return requests_;
  }
  int eventual_gets() const { return eventual_gets_; }
  int read_alls() const { return read_alls_; }
  int write_calls() const { return write_calls_; }
  int fenced_out() const { return fenced_out_; }
  int lease_reads() const {
    std::lock_guard lock(mutex_);
    return lease_reads_;
  }

 private:
  // The records `ids` that exist, each under the lock on its own: with interleave, writes may
  // land in between.
  std::vector<Record> ReadEach(const std::vector<int>& ids) {
    std::vector<Record> records;
    std::function<void()> write;
    {
      std::lock_guard lock(mutex_);
      write = std::exchange(write_after_first_record_, nullptr);
    }
    for (const int id : ids) {
      if (faults_.interleave) std::this_thread::yield();  // a write may land here
      if (!records.empty() && write) std::exchange(write, nullptr)();
      std::lock_guard lock(mutex_);
      if (const auto it = records_.find(id); it != records_.end()) records.push_back(it->second);
    }
    return records;
  }
  bool Roll(double probability) {
    return probability > 0 && std::uniform_real_distribution<double>(0, 1)(random_) < probability;
  }
  std::uint64_t StoredGenerationLocked() const {
    const auto it = records_.find(1);
    if (it == records_.end()) return 0;
    const auto g = it->second.find(attr::kGeneration);
    return g == it->second.end() ? 0 : static_cast<std::uint64_t>(*ParseInteger(g->second));
  }
  void KeepMeta(Record& record) const {
    const auto it = records_.find(1);
    if (it == records_.end()) return;
    for (const auto name :
         {attr::kGeneration, attr::kOverflow, attr::kLastChange, attr::kRecentChanges}) {
      if (const auto a = it->second.find(name); a != it->second.end()) {
        record.insert_or_assign(std::string(name), a->second);
      }
    }
  }
  void BumpLocked() {
    const std::uint64_t next = StoredGenerationLocked() + 1;
    Record& first = records_[1];
    if (!first.contains(attr::kStatus)) {
      first = SlotToRecord(Slot::Free(1));
    }
    first.insert_or_assign(std::string(attr::kGeneration),
                           AttributeValue::Number(static_cast<std::int64_t>(next)));
    history_[next] = records_;
  }

  mutable std::mutex mutex_;
  std::size_t max_records_;
  std::mt19937 random_;
  Faults faults_;
  Table records_;
  std::map<std::uint64_t, Table> history_;
  std::vector<ConditionalWrite> applied_;
  std::optional<Lease> lease_;
  int bumps_during_read_all_ = 0;
  std::function<void()> write_after_first_record_;
  int gets_ = 0;
  int requests_ = 0;
  bool snapshot_gets_ = true;
  int snapshot_gets_done_ = 0;
  int eventual_gets_ = 0;
  int read_alls_ = 0;
  int write_calls_ = 0;
  int fenced_out_ = 0;
  int lease_reads_ = 0;
};

// A RecordBackend that forwards to one fake, so that several engines (an orchestrator and
// its readers, or two orchestrators) share one store.
class SharedRecordBackend final : public RecordBackend {
 public:
  explicit SharedRecordBackend(FakeRecordBackend& fake) : fake_(fake) {}
  std::string Describe() const override { return fake_.Describe(); }
  Result<std::optional<Record>> Get(int id, const std::vector<std::string>& projection,
                                    bool consistent) override {
    return fake_.Get(id, projection, consistent);
  }
  Result<std::vector<Record>> ReadAll() override { return fake_.ReadAll(); }
  Result<std::vector<Record>> GetMany(const std::vector<int>& ids) override {
    return fake_.GetMany(ids);
  }
  std::size_t MaxSnapshotGet() const override { return fake_.MaxSnapshotGet(); }
  Result<std::vector<Record>> GetSnapshot(const std::vector<int>& ids) override {
    return fake_.GetSnapshot(ids);
  }
  Result<void> Write(const ConditionalWrite& write) override { return fake_.Write(write); }
  std::size_t MaxRecordsPerWrite() const override { return fake_.MaxRecordsPerWrite(); }
  Result<std::optional<Lease>> ReadLease() override { return fake_.ReadLease(); }
  Result<void> WriteLease(const Lease& lease, std::optional<std::uint64_t> expected) override {
    return fake_.WriteLease(lease, expected);
  }

 private:
  FakeRecordBackend& fake_;
};

}  // namespace hsdo::testing
