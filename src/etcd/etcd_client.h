// EtcdClient: the part of etcd v3's API that hsdo uses (range, txn, watch, leases, auth),
// spoken through etcd's JSON gateway (POST /v3/...; keys and values base64, int64 numbers as
// strings) on the project's HTTP transport. Fails over between endpoints: a transport error,
// a 5xx or an etcd "unavailable"/"no leader" answer moves on to the next endpoint.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "http/http_client.h"

namespace hsdo::etcd {

struct KeyValue {
  std::string key;
  std::string value;
  std::int64_t create_revision = 0;
  std::int64_t mod_revision = 0;
  std::int64_t version = 0;
  std::int64_t lease = 0;
};

struct RangeResult {
  std::int64_t revision = 0;  // the store's revision the answer was read at
  std::vector<KeyValue> kvs;
};

// One comparison of a txn, on one key.
struct Compare {
  enum class Target { kVersion, kCreate, kMod, kValue, kLease };
  enum class Op { kEqual, kNotEqual, kGreater, kLess };
  std::string key;
  Target target = Target::kMod;
  Op op = Op::kEqual;
  std::int64_t number = 0;  // for kVersion, kCreate, kMod, kLease
  std::string value;        // for kValue
};

struct Put {
  std::string key;
  std::string value;
  std::int64_t lease = 0;  // 0: no lease
};

struct TxnRequest {
  std::vector<Compare> compares;
  std::vector<Put> success;                 // puts when every compare holds
  std::vector<Put> create_if_absent;        // also then, each only if its key does not exist
  std::vector<std::string> success_delete;  // keys deleted when every compare holds
  std::vector<std::string> failure_get;     // keys read when one does not
};

struct TxnResult {
  bool succeeded = false;
  std::int64_t revision = 0;  // after the txn (its own revision when it wrote)
  std::vector<KeyValue> failure_kvs;
};

// How a watch stream ended (it never ends on its own while etcd is healthy).
struct WatchEnd {
  // Non-zero when etcd cancelled the watch because start_revision was compacted away: the
  // caller must read everything again and watch from the current revision.
  std::int64_t compact_revision = 0;
  // The stream lasted its watch_timeout and was ended by this side, as every stream is that
  // long (a stream kept open for good would hide a member that went away): nothing was lost,
  // the caller watches again from where it was.
  bool timed_out = false;
};

// The most one watch message may hold (hsdo watches one key: its messages are a few hundred
// bytes); a longer one ends the watch (found in review: one without end, from a peer that is
// not etcd, took an agent to 1.1 GB).
inline constexpr std::size_t kMaxWatchMessageBytes = std::size_t{64} << 20;

struct ClientOptions {
  std::vector<std::string> endpoints;  // http(s)://host:port, no trailing '/'
  std::string username;                // empty: no auth
  std::string password;
  // ETCD_PASSWORD_FILE: the password is read from it at each authentication instead (a
  // password rotated in the file is used at the next one).
  std::string password_file;
  http::TlsOptions tls;
  // Per attempt on one member. etcd answers in milliseconds when it has a leader; a member
  // whose leader just died holds a request until its own timeout (seconds), which is better
  // spent asking the next member.
  std::chrono::milliseconds request_timeout{1'000};
  // How long one watch stream may stay open before it is re-created (from the last revision
  // seen): bounds how long a silently dead connection can hold a watch.
  std::chrono::milliseconds watch_timeout{300'000};
  // Called (on the calling thread) each time a request gives up on one member and asks the
  // next: for a metric.
  std::function<void()> on_failover;
  // At shutdown: a request in flight is abandoned at once and no other member is tried.
  std::stop_token cancel;
};

using HttpFactory = std::function<std::unique_ptr<http::HttpClient>(const http::TlsOptions&)>;

// "/a/" → the range_end that covers every key starting with it ("/a0").
std::string PrefixRangeEnd(std::string_view prefix);
std::string Base64Encode(std::string_view data);
std::optional<std::string> Base64Decode(std::string_view text);

class EtcdClient {
 public:
  // `make_http` builds a transport (the unary calls share one, each watch has its own);
  // null: libcurl.
  explicit EtcdClient(ClientOptions options, HttpFactory make_http = nullptr);

  // Keys in [key, range_end) (just `key` when range_end is empty), linearizable.
  Result<RangeResult> Range(const std::string& key, const std::string& range_end = "",
                            bool keys_only = false);
  Result<TxnResult> Txn(const TxnRequest& request);

  Result<std::int64_t> LeaseGrant(std::chrono::seconds ttl);
  // The lease's remaining TTL in seconds; 0 when the lease no longer exists.
  Result<std::int64_t> LeaseKeepAlive(std::int64_t id);
  Result<void> LeaseRevoke(std::int64_t id);
  // Drops the history before `revision` (the keys' versions at it and after it stay). One
  // compacted already, by another client or etcd's own auto-compaction, is no error.
  Result<void> Compact(std::int64_t revision);

  // Streams changes of [key, range_end) from `start_revision` (0: from now): `on_events(rev)`
  // is called (on this thread) for each batch of events, with the highest mod revision in
  // it. Returns when the stream ends: on `stop`, an error, a compaction or watch_timeout.
  // `on_created`, when given, is called once a member has created the watch.
  // Thread-safe with the other calls (it uses its own transport).
  Result<WatchEnd> Watch(const std::string& key, const std::string& range_end,
                         std::int64_t start_revision,
                         const std::function<void(std::int64_t)>& on_events, std::stop_token stop,
                         const std::function<void()>& on_created = {});

  const ClientOptions& options() const { return options_; }

 private:
  Result<nlohmann::json> Call(std::string_view path, const nlohmann::json& body);
  Result<nlohmann::json> CallOn(http::HttpClient& http, const std::string& endpoint,
                                std::string_view path, const std::string& body);
  Result<void> Authenticate(http::HttpClient& http, const std::string& endpoint);
  // The password to log in with: ETCD_PASSWORD, or ETCD_PASSWORD_FILE's content read now.
  Result<std::string> LoginPassword();
  // When a login is due and the password comes from a file: whether the file gives one.
  Result<void> CheckLoginPassword();
  http::Request MakeRequest(const std::string& endpoint, std::string_view path, std::string body);
  std::string Token();
  std::vector<std::string> Secrets();  // the password and the token: kept out of messages

  ClientOptions options_;
  HttpFactory make_http_;
  std::mutex call_mutex_;  // one unary call at a time on http_
  std::unique_ptr<http::HttpClient> http_;
  std::atomic<std::size_t> current_{0};  // the endpoint to try first
  std::mutex token_mutex_;
  std::string token_;
  std::string password_read_;  // the last password read from password_file (token_mutex_)
};

}  // namespace hsdo::etcd
