#include "etcd/etcd_backend.h"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <random>

#include <fmt/format.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "store/seed_record.h"

namespace hsdo::etcd {

namespace {

using nlohmann::json;

constexpr std::string_view kWriteId = "WriteId";
// A watch that keeps failing is retried at this pace (the agent polls meanwhile).
constexpr std::chrono::milliseconds kWatchRetryMin{100};
constexpr std::chrono::milliseconds kWatchRetryMax{2'000};
constexpr std::chrono::milliseconds kWatchLagLimit{2'000};

std::optional<std::int64_t> ParseInt(std::string_view text) {
  std::int64_t value = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
  return value;
}

// The slot id of a key hsdo writes (`<prefix>/slots/<id>`, the id in decimal without a sign or
// leading zeros); nullopt for any other key, which is skipped: `slots/0007` written by hand read
// as slot 7 and filled that slot on every agent.
std::optional<int> SlotIdOfKey(std::string_view key, std::string_view slots_prefix) {
  if (!key.starts_with(slots_prefix)) return std::nullopt;
  const std::string_view text = key.substr(slots_prefix.size());
  if (text.empty() || text.front() < '1' || text.front() > '9') return std::nullopt;
  const auto id = ParseInt(text);
  if (!id || *id < 1 || *id > kMaxSlotId) return std::nullopt;
  return static_cast<int>(*id);
}

bool IsMetadata(std::string_view name) {
  return name == attr::kGeneration || name == attr::kOverflow || name == attr::kRemovalHold;
}

// The removal hold the generation key carries, as an attribute of record 1.
void AddRemovalHold(const std::string& hold, Record& record) {
  if (!hold.empty()) record[std::string(attr::kRemovalHold)] = AttributeValue::String(hold);
}

// The fence as stored and compared: one canonical text (nlohmann's objects sort their keys).
std::string FenceJson(const std::string& holder, std::uint64_t epoch) {
  return json{{"holder", holder}, {"epoch", epoch}}.dump();
}

std::string LeaseJson(const Lease& lease) {
  return json{{"holder", lease.holder},
              {"epoch", lease.epoch},
              {"version", lease.version},
              {"duration_ms", lease.duration_ms},
              {"since_unix_ms", lease.since_unix_ms},
              {"renewed_unix_ms", lease.renewed_unix_ms}}
      .dump();
}

Result<Lease> ParseLease(const std::string& text) {
  try {
    const json value = json::parse(text);
    Lease lease{.holder = value.at("holder").get<std::string>(),
                .epoch = value.at("epoch").get<std::uint64_t>(),
                .version = value.at("version").get<std::uint64_t>(),
                .duration_ms = value.at("duration_ms").get<std::int64_t>(),
                .since_unix_ms = value.value("since_unix_ms", std::int64_t{0}),
                .renewed_unix_ms = value.value("renewed_unix_ms", std::int64_t{0})};
    return lease;
  } catch (const json::exception& e) {
    return MakeError(ErrorCode::kInvalidArgument, "etcd lease key is not a lease: {}", e.what());
  }
}

}  // namespace

std::string RecordToJson(const Record& record) {
  json out = json::object();
  for (const auto& [name, value] : record) {
    if (value.type == AttributeValue::Type::kNumber) {
      if (const auto number = ParseInt(value.text)) {
        out[name] = *number;
        continue;
      }
    }
    out[name] = value.text;
  }
  return out.dump();
}

Result<Record> JsonToRecord(std::string_view text) {
  json parsed;
  try {
    parsed = json::parse(text);
  } catch (const json::exception&) {
    return MakeError(ErrorCode::kInvalidArgument, "not JSON");
  }
  if (!parsed.is_object()) return MakeError(ErrorCode::kInvalidArgument, "not a JSON object");
  Record record;
  for (const auto& [name, value] : parsed.items()) {
    if (value.is_string()) {
      record[name] = AttributeValue::String(value.get<std::string>());
    } else if (value.is_number_integer()) {
      record[name] = AttributeValue{AttributeValue::Type::kNumber, value.dump()};
    } else {
      record[name] = AttributeValue{AttributeValue::Type::kOther, value.dump()};
    }
  }
  return record;
}

EtcdBackend::EtcdBackend(std::unique_ptr<EtcdClient> client, std::string prefix,
                         prometheus::Registry* registry)
    : client_(std::move(client)),
      prefix_(std::move(prefix)),
      slots_prefix_(prefix_ + "/slots/"),
      generation_key_(prefix_ + "/generation"),
      lease_key_(prefix_ + "/lease"),
      fence_key_(prefix_ + "/fence"),
      store_key_(prefix_ + "/store"),
      write_id_seed_(std::random_device{}()) {
  if (registry != nullptr) {
    watch_restart_counter_ = &prometheus::BuildCounter()
                                  .Name("hsdo_etcd_watch_restarts_total")
                                  .Help("etcd watch streams lost (or compacted) and re-created")
                                  .Register(*registry)
                                  .Add({});
  }
}

EtcdBackend::~EtcdBackend() {
  if (watcher_.joinable()) {
    watcher_.request_stop();
    sleep_cv_.notify_all();
    watcher_.join();
  }
}

std::string EtcdBackend::Describe() const {
  return fmt::format("etcd prefix '{}' at {}", prefix_,
                     fmt::join(client_->options().endpoints, ","));
}

// A value that is not a JSON object, or whose BackendServerID is not the key's, becomes a
// record the codec refuses as this slot's: known as invalid (an agent keeps what the slot held,
// the orchestrator writes it over), neither a free slot nor another slot's record. Said once
// per key and cause: agents read the whole table every minute.
Record EtcdBackend::SlotRecord(const std::string& key, std::string_view value, int id) {
  auto parsed = JsonToRecord(value);
  std::string why = parsed ? std::string() : parsed.error().message;
  if (parsed && RecordId(*parsed) != id) why = "its BackendServerID is not the key's";
  std::lock_guard lock(mutex_);
  if (why.empty()) {
    if (!corrupt_said_.empty()) corrupt_said_.erase(key);
    return std::move(*parsed);
  }
  if (auto& said = corrupt_said_[key]; said != why) {
    spdlog::warn("etcd store: key {}: {}; read as an invalid record of slot {}", key, why, id);
    said = why;
  }
  return Record{{std::string(attr::kId), AttributeValue::Number(id)},
                {std::string(attr::kStatus), AttributeValue{AttributeValue::Type::kOther, ""}}};
}

std::string EtcdBackend::SlotKey(int id) const { return slots_prefix_ + std::to_string(id); }

Result<EtcdBackend::Generation> EtcdBackend::ParseGeneration(const std::optional<KeyValue>& kv) {
  Generation out;
  if (!kv) return out;  // a new table
  out.mod_revision = kv->mod_revision;
  auto record = JsonToRecord(kv->value);
  if (!record) {
    return MakeError(ErrorCode::kInvalidArgument, "etcd generation key {}: {}", kv->key,
                     record.error().message);
  }
  const auto number = [&](std::string_view name) -> std::optional<std::int64_t> {
    const auto it = record->find(name);
    if (it == record->end() || it->second.type != AttributeValue::Type::kNumber) {
      return std::nullopt;
    }
    return ParseInt(it->second.text);
  };
  const auto generation = number(attr::kGeneration);
  if (!generation || *generation < 0) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "etcd generation key {}: TableGeneration is not a number", kv->key);
  }
  out.generation = static_cast<std::uint64_t>(*generation);
  out.overflow = number(attr::kOverflow).value_or(0);
  if (const auto it = record->find(kWriteId); it != record->end()) out.write_id = it->second.text;
  if (const auto it = record->find(attr::kRemovalHold); it != record->end()) {
    out.removal_hold = it->second.text;
  }
  return out;
}

void EtcdBackend::Remember(const Generation& generation) {
  {
    std::lock_guard lock(mutex_);
    // Whatever the revision: every read is linearizable and this backend has one caller, so
    // the latest answer is the store's state. A cluster rebuilt or restored from a snapshot
    // counts its revisions again from below the remembered one; keeping the higher one would
    // condition every later write of that generation on a revision that never comes back.
    last_ = generation;
  }
  CheckWatchLag(generation.mod_revision);
}

void EtcdBackend::CheckWatchLag(std::int64_t read_revision) {
  const std::int64_t watched = watched_revision_.load();
  if (watched == 0 || read_revision == 0) return;  // not watching (yet)
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(mutex_);
    if (read_revision <= watched) {
      lagging_revision_ = 0;
      return;
    }
    if (lagging_revision_ == 0) {
      // A read may simply be ahead of the event on its way: give the stream time.
      lagging_revision_ = read_revision;
      lagging_since_ = now;
      return;
    }
    if (now - lagging_since_ < kWatchLagLimit) return;
    lagging_revision_ = 0;
  }
  spdlog::warn("etcd store: the watch is silent (revision {} read, {} watched); watching again",
               read_revision, watched);
  std::lock_guard lock(stream_mutex_);
  stream_stop_.request_stop();
}

Result<EtcdBackend::Generation> EtcdBackend::ReadGenerationKey() {
  auto range = client_->Range(generation_key_);
  if (!range) return range.error();
  auto generation =
      ParseGeneration(range->kvs.empty() ? std::nullopt : std::optional(range->kvs.front()));
  if (generation) Remember(*generation);
  return generation;
}

// Every read is linearizable (one ReadIndex round trip to the leader): an agent woken by a
// watch event on one member must not read an older generation from another.
Result<std::optional<Record>> EtcdBackend::Get(int id, const std::vector<std::string>& projection,
                                               bool consistent) {
  (void)consistent;
  const bool only_metadata = id == 1 && !projection.empty() &&
                             std::all_of(projection.begin(), projection.end(),
                                         [](const auto& p) { return IsMetadata(p); });
  std::optional<Record> record;
  if (!only_metadata) {
    auto range = client_->Range(SlotKey(id));
    if (!range) return range.error();
    if (!range->kvs.empty()) {
      record = SlotRecord(range->kvs.front().key, range->kvs.front().value, id);
    }
  }
  if (id == 1) {
    auto generation = ReadGenerationKey();
    if (!generation) return generation.error();
    if (generation->mod_revision != 0) {
      if (!record) record.emplace();
      (*record)[std::string(attr::kGeneration)] =
          AttributeValue::Number(static_cast<std::int64_t>(generation->generation));
      (*record)[std::string(attr::kOverflow)] = AttributeValue::Number(generation->overflow);
      AddRemovalHold(generation->removal_hold, *record);
    }
  }
  if (record && !projection.empty()) {
    for (auto it = record->begin(); it != record->end();) {
      it = std::find(projection.begin(), projection.end(), it->first) == projection.end()
               ? record->erase(it)
               : std::next(it);
    }
  }
  return record;
}

Result<std::vector<Record>> EtcdBackend::ReadAll() {
  // One range over the whole prefix: a snapshot of the slots and the generation together.
  auto range = client_->Range(prefix_ + "/", PrefixRangeEnd(prefix_ + "/"));
  if (!range) return range.error();
  std::vector<Record> records;
  std::optional<KeyValue> generation_kv;
  std::optional<std::size_t> record_1;  // an index: `records` grows
  for (const KeyValue& kv : range->kvs) {
    if (kv.key == generation_key_) {
      generation_kv = kv;
      continue;
    }
    const auto id = SlotIdOfKey(kv.key, slots_prefix_);
    if (!id) continue;  // not a slot (a lease key, or something else under the prefix)
    // The generation goes on record 1, a corrupt one too (not JSON, an id that is not the
    // number 1: it is read as record 1, invalid): without it every write would conflict.
    records.push_back(SlotRecord(kv.key, kv.value, *id));
    if (*id == 1) record_1 = records.size() - 1;
  }
  auto generation = ParseGeneration(generation_kv);
  if (!generation) return generation.error();
  Remember(*generation);
  if (generation->mod_revision != 0) {
    if (!record_1) {  // none, or a corrupt one: the seed's free record carries the generation
      records.push_back(SlotToRecord(Slot::Free(1)));
      record_1 = records.size() - 1;
    }
    Record& first = records[*record_1];
    first[std::string(attr::kGeneration)] =
        AttributeValue::Number(static_cast<std::int64_t>(generation->generation));
    first[std::string(attr::kOverflow)] = AttributeValue::Number(generation->overflow);
    AddRemovalHold(generation->removal_hold, first);
  }
  return records;
}

Result<bool> EtcdBackend::Initialised() {
  // The lease too: an older hsdo's orchestrator that led without ever writing a table.
  for (const std::string* key : {&store_key_, &generation_key_, &lease_key_}) {
    auto range = client_->Range(*key);
    if (!range) return range.error();
    if (!range->kvs.empty()) return true;
  }
  return false;
}

Result<void> EtcdBackend::Initialise() {
  TxnRequest request;
  request.create_if_absent.push_back(
      Put{.key = store_key_, .value = R"({"MadeBy":"hsdo init-table"})"});
  auto txn = client_->Txn(request);
  if (!txn) return txn.error();
  return Ok();
}

Result<void> EtcdBackend::Write(const ConditionalWrite& write) {
  if (write.puts.size() > kMaxRecordsPerTxn) {
    return MakeError(ErrorCode::kInvalidArgument, "etcd store: {} records in one write (max {})",
                     write.puts.size(), kMaxRecordsPerTxn);
  }
  // The condition is on the generation key's mod revision; find the revision that goes with
  // the expected generation (usually known from the read this write is based on).
  Generation base;
  {
    std::lock_guard lock(mutex_);
    base = last_;
  }
  if (base.generation != write.expected_generation) {
    auto read = ReadGenerationKey();
    if (!read) return read.error();
    base = *read;
  }
  if (base.generation != write.expected_generation) {
    return MakeError(ErrorCode::kConflict, "{}: generation is {}, not {}", Describe(),
                     base.generation, write.expected_generation);
  }
  TxnRequest txn;
  txn.compares.push_back(Compare{
      .key = generation_key_, .target = Compare::Target::kMod, .number = base.mod_revision});
  if (write.fence) {
    // A leader paused past its lease cannot write even once: the fence key names the
    // current holder and epoch, in this very txn.
    txn.compares.push_back(Compare{.key = fence_key_,
                                   .target = Compare::Target::kValue,
                                   .value = FenceJson(write.fence->holder, write.fence->epoch)});
  }
  bool has_record_1 = false;
  for (const Record& put : write.puts) {
    const auto id_it = put.find(attr::kId);
    const auto id = id_it == put.end() ? std::nullopt : ParseInt(id_it->second.text);
    if (!id || *id < 1 || *id > kMaxSlotId) {
      return MakeError(ErrorCode::kInvalidArgument, "etcd store: a record without a valid id");
    }
    has_record_1 = has_record_1 || *id == 1;
    Record stored = put;
    std::erase_if(stored, [](const auto& entry) { return IsMetadata(entry.first); });
    txn.success.push_back(
        Put{.key = SlotKey(static_cast<int>(*id)), .value = RecordToJson(stored)});
  }
  if (!has_record_1 && !write.free_record_1.empty()) {
    Record free = write.free_record_1;
    free[std::string(attr::kId)] = AttributeValue::Number(1);
    txn.create_if_absent.push_back(Put{.key = SlotKey(1), .value = RecordToJson(free)});
  }
  // The write id lets a write whose answer was lost (and that the client retried on another
  // member) recognise itself in the failure branch instead of reporting a conflict.
  const std::string write_id =
      fmt::format("{:08x}-{:x}", write_id_seed_ & 0xffffffffu, ++write_count_);
  // The generation key is written whole: a hold the write leaves is the one it is conditioned on.
  const std::string removal_hold = write.removal_hold.value_or(base.removal_hold);
  Record generation_record{
      {std::string(attr::kGeneration),
       AttributeValue::Number(static_cast<std::int64_t>(write.next_generation))},
      {std::string(attr::kOverflow), AttributeValue::Number(write.overflow)},
      {std::string(kWriteId), AttributeValue::String(write_id)}};
  if (!removal_hold.empty()) {
    generation_record[std::string(attr::kRemovalHold)] = AttributeValue::String(removal_hold);
  }
  txn.success.push_back(Put{.key = generation_key_, .value = RecordToJson(generation_record)});
  txn.failure_get.push_back(generation_key_);
  auto result = client_->Txn(txn);
  if (!result) return result.error();
  if (result->succeeded) {
    Remember(Generation{.generation = write.next_generation,
                        .overflow = write.overflow,
                        .mod_revision = result->revision,
                        .write_id = write_id,
                        .removal_hold = removal_hold});
    return Ok();
  }
  std::optional<KeyValue> now;
  for (const auto& kv : result->failure_kvs) {
    if (kv.key == generation_key_) now = kv;
  }
  auto current = ParseGeneration(now);
  if (current) {
    Remember(*current);
    if (current->write_id == write_id) return Ok();  // our own write, applied before
  }
  if (write.fence && current && current->generation == write.expected_generation) {
    return MakeError(ErrorCode::kConflict,
                     "{}: the leader lease is no longer held by {} (epoch {})", Describe(),
                     write.fence->holder, write.fence->epoch);
  }
  return MakeError(ErrorCode::kConflict, "{}: the generation key changed (generation now {})",
                   Describe(), current ? std::to_string(current->generation) : "unreadable");
}

Result<std::optional<std::pair<Lease, std::int64_t>>> EtcdBackend::ReadLeaseKey() {
  auto range = client_->Range(lease_key_);
  if (!range) return range.error();
  if (range->kvs.empty()) return std::optional<std::pair<Lease, std::int64_t>>();
  auto lease = ParseLease(range->kvs.front().value);
  if (!lease) return lease.error();
  lease_seen_ = LeaseSeen{lease->version, range->kvs.front().mod_revision};
  return std::optional(std::pair(std::move(*lease), range->kvs.front().mod_revision));
}

Result<std::optional<Lease>> EtcdBackend::ReadLease() {
  auto stored = ReadLeaseKey();
  if (!stored) return stored.error();
  if (!*stored) return std::optional<Lease>();
  return std::optional<Lease>((*stored)->first);
}

Result<void> EtcdBackend::WriteLease(const Lease& lease,
                                     std::optional<std::uint64_t> expected_version) {
  // The condition is on the lease key's mod revision: 0 (absent) when no lease is expected,
  // else the revision at which the expected version was written.
  std::int64_t mod_revision = 0;
  if (expected_version && lease_seen_ && lease_seen_->version == *expected_version) {
    // The version expected is the one this backend last read or wrote (a renewal after the
    // election's read, a release after a renewal): its revision is known, no read needed (a
    // stopping leader's release is then one request, which must fit in the stop's budget).
    // Changed since, the key's revision is another and the txn fails as a conflict.
    mod_revision = lease_seen_->mod_revision;
  } else if (expected_version) {
    auto stored = ReadLeaseKey();
    if (!stored) return stored.error();
    if (!*stored || (*stored)->first.version != *expected_version) {
      return MakeError(ErrorCode::kConflict, "{}: the leader lease changed (held by {})",
                       Describe(), *stored ? (*stored)->first.holder : std::string("nobody"));
    }
    mod_revision = (*stored)->second;
  }
  TxnRequest txn{.compares = {Compare{
                     .key = lease_key_, .target = Compare::Target::kMod, .number = mod_revision}},
                 .success = {Put{.key = lease_key_, .value = LeaseJson(lease)},
                             Put{.key = fence_key_, .value = FenceJson(lease.holder, lease.epoch)}},
                 .failure_get = {lease_key_}};
  auto result = client_->Txn(txn);
  if (!result) return result.error();
  if (result->succeeded) {
    lease_seen_ = LeaseSeen{lease.version, result->revision};
    if (!lease.holder.empty()) MaybeCompact(result->revision);  // not at a release
    return Ok();
  }
  std::optional<Lease> now;
  std::int64_t now_revision = 0;
  for (const auto& kv : result->failure_kvs) {
    if (auto parsed = ParseLease(kv.value)) {
      now = std::move(*parsed);
      now_revision = kv.mod_revision;
    }
  }
  // A retried txn whose first attempt was applied finds its own lease there.
  if (now && *now == lease) {
    lease_seen_ = LeaseSeen{lease.version, now_revision};
    return Ok();
  }
  return MakeError(ErrorCode::kConflict, "{}: the leader lease changed (held by {})", Describe(),
                   now ? now->holder : std::string("nobody"));
}

void EtcdBackend::MaybeCompact(std::int64_t revision) {
  if (compaction_interval_ <= std::chrono::milliseconds::zero()) return;
  const auto now = std::chrono::steady_clock::now();
  if (compact_to_ != 0 && now < compact_due_) return;
  // Up to the revision of one interval ago, never to the current one: a watch or a read that
  // started since still finds its revision. (A watch further behind is told it was compacted
  // and reads the table again.)
  if (compact_to_ != 0 && compact_to_ < revision) {
    if (auto compacted = client_->Compact(compact_to_); !compacted) {
      if (compacted.error().message != compact_error_) {
        spdlog::warn("etcd store: cannot compact the history up to revision {}: {}", compact_to_,
                     compacted.error().message);
        compact_error_ = compacted.error().message;
      }
    } else {
      if (!compact_error_.empty()) spdlog::info("etcd store: compacting the history again");
      compact_error_.clear();
      spdlog::debug("etcd store: history compacted up to revision {}", compact_to_);
    }
  }
  compact_to_ = revision;
  compact_due_ = now + compaction_interval_;
}

bool EtcdBackend::SleepFor(std::stop_token& stop, std::chrono::milliseconds duration) {
  std::unique_lock lock(sleep_mutex_);
  return !sleep_cv_.wait_for(lock, stop, duration, [] { return false; }) && !stop.stop_requested();
}

bool EtcdBackend::Watch(std::function<void()> on_change) {
  if (watcher_.joinable()) return true;
  watcher_ = std::jthread([this, on_change = std::move(on_change)](std::stop_token stop) {
    WatchLoop(stop, on_change);
  });
  return true;
}

// Watches the generation key, which every write changes. Whatever breaks the stream (a
// member stopped, a compaction, a timeout), the loop wakes the agent (so that it reads) and
// watches again, on the next member, from the revision it reads there (the agent's read after
// that wake-up covers whatever changed in between).
void EtcdBackend::WatchLoop(std::stop_token stop, std::function<void()> on_change) {
  std::int64_t last_revision = 0;
  auto retry = kWatchRetryMin;
  bool failing = false;
  bool planned_end = false;  // the last stream ended at its watch_timeout
  while (!stop.stop_requested()) {
    if (last_revision == 0) {
      auto range = client_->Range(generation_key_, "", /*keys_only=*/true);
      if (!range) {
        if (!failing) spdlog::warn("etcd store: cannot start the watch: {}", range.error().message);
        failing = true;
        if (!SleepFor(stop, retry)) break;
        retry = std::min(retry * 2, kWatchRetryMax);
        continue;
      }
      last_revision = range->revision;
      on_change();  // whatever changed before the watch starts
    }
    watched_revision_ = last_revision;
    std::stop_source stream;
    {
      std::lock_guard lock(stream_mutex_);
      stream_stop_ = stream;
    }
    const std::stop_callback end_stream(stop, [&stream] { stream.request_stop(); });
    // Said once the stream is created (review: said at the first write after it, a quiet
    // table's log said "watch lost" for days after etcd came back).
    // The backoff starts again at the first event only: a stream that a member creates and
    // then ends at once, again and again, must not be retried ten times a second.
    const auto watching = [&] {
      if (failing) {
        spdlog::info("etcd store: watching again");
        failing = false;
      }
    };
    auto end = client_->Watch(
        generation_key_, "", last_revision + 1,
        [&](std::int64_t revision) {
          last_revision = std::max(last_revision, revision);
          watched_revision_ = last_revision;
          watching();
          retry = kWatchRetryMin;
          on_change();
        },
        stream.get_token(), watching);
    if (stop.stop_requested()) break;
    const bool after_planned_end = planned_end;
    planned_end = end && end->timed_out;
    if (planned_end) continue;  // the planned end of a stream: watch on from there
    if (end && end->compact_revision != 0) {
      // The events since last_revision are gone: read everything (the agent does, when woken)
      // and watch from the current revision. Expected after a stream's planned end when the
      // table did not change for ETCD_COMPACTION_INTERVAL (the leader compacts that often):
      // no stream was lost, nothing to count or say.
      if (after_planned_end) {
        spdlog::debug("etcd store: watch revision {} was compacted (at {}); reading again",
                      last_revision + 1, end->compact_revision);
      } else {
        ++watch_restarts_;
        if (watch_restart_counter_ != nullptr) watch_restart_counter_->Increment();
        spdlog::info("etcd store: watch revision {} was compacted (at {}); reading again",
                     last_revision + 1, end->compact_revision);
      }
      last_revision = 0;
      continue;
    }
    ++watch_restarts_;
    if (watch_restart_counter_ != nullptr) watch_restart_counter_->Increment();
    // The next stream starts from the revision the cluster has then, read with the wake-up
    // that follows it: a cluster rebuilt or restored from a snapshot behind the stream's
    // member counts from below last_revision, and a watch from last_revision + 1 would wait
    // for a revision that may never come.
    last_revision = 0;
    if (!end && !failing) {
      spdlog::warn("etcd store: watch lost ({}); reading and watching again", end.error().message);
      failing = true;
    }
    on_change();
    if (!SleepFor(stop, retry)) break;
    retry = std::min(retry * 2, kWatchRetryMax);
  }
}

Result<ClientOptions> MakeClientOptions(const EtcdConfig& config) {
  if (config.endpoints.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "STORE=etcd needs ETCD_ENDPOINTS");
  }
  std::string prefix = config.prefix;
  while (prefix.size() > 1 && prefix.ends_with('/')) prefix.pop_back();
  if (prefix.empty() || prefix == "/" || std::any_of(prefix.begin(), prefix.end(), [](char c) {
        return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
      })) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "ETCD_PREFIX must be a non-empty key prefix without control characters "
                     "(e.g. /hsdo/fleet)");
  }
  if (config.cert.empty() != config.key.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "ETCD_CERT and ETCD_KEY go together");
  }
  for (const auto& [name, path] :
       {std::pair{"ETCD_CACERT", &config.ca_cert}, std::pair{"ETCD_CERT", &config.cert},
        std::pair{"ETCD_KEY", &config.key}}) {
    std::error_code error;
    if (!path->empty() && !std::filesystem::is_regular_file(*path, error)) {
      return MakeError(ErrorCode::kInvalidArgument, "{}: no such file: {}", name, *path);
    }
  }
  const bool tls_files = !config.ca_cert.empty() || !config.cert.empty();
  for (const auto& endpoint : config.endpoints) {
    if (tls_files && endpoint.starts_with("http://")) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "ETCD_CACERT/ETCD_CERT are set but endpoint {} is not https://", endpoint);
    }
  }
  if (!config.username.empty() &&
      std::any_of(config.endpoints.begin(), config.endpoints.end(),
                  [](const std::string& e) { return e.starts_with("http://"); })) {
    spdlog::warn("etcd store: the password of {} will travel unencrypted to an http:// endpoint",
                 config.password_file.empty() ? "ETCD_PASSWORD" : "ETCD_PASSWORD_FILE");
  }
  if (config.username.empty() && !config.password.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "ETCD_PASSWORD is set without ETCD_USERNAME");
  }
  return ClientOptions{
      .endpoints = config.endpoints,
      .username = config.username,
      .password = config.password,
      .password_file = config.password_file,
      .tls = {.ca_file = config.ca_cert, .client_cert = config.cert, .client_key = config.key}};
}

namespace {

std::string TrimmedPrefix(std::string prefix) {
  while (prefix.size() > 1 && prefix.ends_with('/')) prefix.pop_back();
  return prefix;
}

}  // namespace

Result<std::unique_ptr<EtcdBackend>> MakeEtcdBackend(const EtcdConfig& config,
                                                     prometheus::Registry* registry,
                                                     std::stop_token cancel) {
  auto options = MakeClientOptions(config);
  if (!options) return options.error();
  options->cancel = std::move(cancel);
  std::string prefix = TrimmedPrefix(config.prefix);
  if (registry != nullptr) {
    auto& failovers = prometheus::BuildCounter()
                          .Name("hsdo_etcd_failovers_total")
                          .Help("etcd requests that gave up on one member and asked the next")
                          .Register(*registry)
                          .Add({});
    options->on_failover = [&failovers] { failovers.Increment(); };
  }
  auto backend = std::make_unique<EtcdBackend>(std::make_unique<EtcdClient>(std::move(*options)),
                                               std::move(prefix), registry);
  backend->SetCompaction(config.compaction_interval);
  return backend;
}

EtcdNodeReports::EtcdNodeReports(std::unique_ptr<EtcdClient> client, const std::string& prefix,
                                 prometheus::Registry* registry)
    : client_(std::move(client)),
      nodes_prefix_(prefix + "/nodes/"),
      log_(registry, fmt::format("etcd prefix '{}'", prefix)) {}

Result<void> EtcdNodeReports::Report(const NodeReport& report) {
  TxnRequest put;
  put.success.push_back(Put{.key = NodeKey(report.name), .value = EncodeNodeReport(report)});
  auto written = client_->Txn(put);
  if (!written) return log_.Unstored(std::move(written.error()));
  log_.Stored();
  return Ok();
}

Result<std::vector<NodeReport>> EtcdNodeReports::ReadNodeReports() {
  auto range = client_->Range(nodes_prefix_, PrefixRangeEnd(nodes_prefix_));
  if (!range) return range.error();
  std::vector<StoredNodeRecord> records;
  records.reserve(range->kvs.size());
  for (const KeyValue& kv : range->kvs) {
    records.push_back({.key_name = kv.key.substr(nodes_prefix_.size()), .text = kv.value});
  }
  return log_.Decode(records);
}

Result<bool> EtcdNodeReports::DeleteNodeReport(const std::string& name, WallTime reported_at) {
  // Read again, then deleted if its key has not been written since: a node that reported in
  // between keeps its new record.
  const std::string key = NodeKey(name);
  auto range = client_->Range(key);
  if (!range) return range.error();
  if (range->kvs.empty()) return false;
  const KeyValue& kv = range->kvs.front();
  const auto stored = DecodeNodeReport(kv.value);
  if (!stored || stored->reported_at != reported_at) return false;
  TxnRequest remove;
  remove.compares.push_back(
      Compare{.key = key, .target = Compare::Target::kMod, .number = kv.mod_revision});
  remove.success_delete.push_back(key);
  auto removed = client_->Txn(remove);
  if (!removed) return removed.error();
  return removed->succeeded;
}

Result<std::unique_ptr<EtcdNodeReports>> MakeEtcdNodeReports(const EtcdConfig& config,
                                                             prometheus::Registry* registry,
                                                             std::stop_token cancel) {
  auto options = MakeClientOptions(config);
  if (!options) return options.error();
  options->cancel = std::move(cancel);
  return std::make_unique<EtcdNodeReports>(std::make_unique<EtcdClient>(std::move(*options)),
                                           TrimmedPrefix(config.prefix), registry);
}

}  // namespace hsdo::etcd
