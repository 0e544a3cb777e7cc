// DynamoDbStore: the slot table in the seed's DynamoDB table (ARCHITECTURE.md, "Store
// layout"), one item per slot keyed by BackendServerID, with the seed's six attributes
// written exactly so that the original Python clients keep working, plus:
//   Port (N, only when the target has one) and AZ (S, only when known) on slot items;
//   TableGeneration (N) and Overflow (N) on the item of slot 1.
// Why slot 1 carries the generation rather than a metadata item of its own: the Python
// clients Scan every item and index the six seed attributes, so any other item would be
// taken for a server slot (or crash them). Slot 1 always exists, and its extra attributes are
// ignored by those clients.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "aws/aws_client.h"
#include "common/clock.h"
#include "config/config.h"
#include "store/slot_store.h"

namespace prometheus {
class Registry;
class Counter;
}  // namespace prometheus

namespace hsdo::aws {

// TransactWriteItems takes at most 100 actions; one is the generation bump.
inline constexpr std::size_t kMaxSlotsPerTransaction = 99;

// The item codec (pure): a slot ↔ a DynamoDB item in attribute-value JSON.
nlohmann::json SlotToItem(const Slot& slot);
// The slot an item describes, or an error saying what is wrong with it (the caller reads the
// slot as free: an item from the store is never trusted).
Result<Slot> ItemToSlot(const nlohmann::json& item, int id);
// BackendServerID of an item, if it has a valid one.
std::optional<int> ItemSlotId(const nlohmann::json& item);

class DynamoDbStore final : public SlotStore {
 public:
  DynamoDbStore(std::unique_ptr<AwsClient> client, std::string table_name, int list_size,
                prometheus::Registry* registry = nullptr);

  Result<std::uint64_t> ReadGeneration() override;
  Result<SlotTable> ReadTable() override;
  Result<std::uint64_t> WriteSlots(std::span<const Slot> changed, int overflow,
                                   std::uint64_t expected_generation) override;

  // Items read as free because they were invalid, since start.
  std::uint64_t invalid_items() const { return invalid_items_; }

 private:
  Result<std::uint64_t> ReadGenerationWith(bool consistent);
  Result<std::uint64_t> WriteChunk(std::span<const Slot> slots, int overflow,
                                   std::uint64_t expected_generation);
  Error Explain(const Error& error, std::string_view what) const;

  std::unique_ptr<AwsClient> client_;
  std::string table_name_;
  int list_size_;
  std::uint64_t invalid_items_ = 0;
  prometheus::Counter* invalid_counter_ = nullptr;
  std::uint64_t request_token_seed_;
  std::uint64_t request_count_ = 0;
};

// Wiring for the binary (`STORE=dynamodb`): credentials chain, DynamoDB client, store.
// `clock` may be null (the system clock); `registry` may be null (no metrics). `cancel` ends
// requests and retry sleeps at shutdown (AwsClientOptions::cancel).
Result<std::unique_ptr<SlotStore>> MakeDynamoDbStore(const Config& config,
                                                     prometheus::Registry* registry = nullptr,
                                                     const Clock* clock = nullptr,
                                                     std::stop_token cancel = {});

// `hsdo init-table`: creates the table as the seed's Terraform does (hash key
// BackendServerID, type N; PROVISIONED 20/20) unless it exists, and waits until it is
// ACTIVE (polling DescribeTable, at most `max_wait`).
Result<void> InitTable(AwsClient& client, const std::string& table_name,
                       std::chrono::milliseconds max_wait = std::chrono::seconds(120),
                       const std::function<void(std::chrono::milliseconds)>& sleep = nullptr);
Result<void> InitTable(const Config& config, const Clock* clock = nullptr);

}  // namespace hsdo::aws
