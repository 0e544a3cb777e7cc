#include "etcd/etcd_client.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <optional>
#include <span>

#include <spdlog/spdlog.h>

#include "common/secret_file.h"
#include "http/redact.h"

namespace hsdo::etcd {

namespace {

using nlohmann::json;

// gRPC status codes that etcd's gateway puts in "code".
constexpr int kGrpcNotFound = 5;
constexpr int kGrpcDeadlineExceeded = 4;
constexpr int kGrpcUnauthenticated = 16;
constexpr int kGrpcUnavailable = 14;

// int64 fields travel as JSON strings; zero fields are left out.
std::int64_t Int(const json& object, const char* name) {
  const auto it = object.find(name);
  if (it == object.end()) return 0;
  if (it->is_number_integer()) return it->get<std::int64_t>();
  if (!it->is_string()) return 0;
  const auto& text = it->get_ref<const std::string&>();
  std::int64_t value = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  return ec == std::errc() && ptr == text.data() + text.size() ? value : 0;
}

// A field read without throwing (json::value throws when the field is of another type, and
// nothing above would catch it: every agent and the orchestrator ended on std::terminate, found
// by fuzzing): the field's value, the default when it is absent, nullopt when it is of another
// type (an answer of another shape: a proxy's, a gateway's).
std::optional<bool> Flag(const json& object, const char* name) {
  const auto it = object.find(name);
  if (it == object.end()) return false;  // proto3's JSON leaves false out
  if (!it->is_boolean()) return std::nullopt;
  return it->get<bool>();
}

std::optional<std::string> Text(const json& object, const char* name) {
  const auto it = object.find(name);
  if (it == object.end()) return std::string();  // and "" (an empty value)
  if (!it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

std::string B64(const std::string& text) { return Base64Encode(text); }

Result<KeyValue> ParseKeyValue(const json& kv) {
  KeyValue out;
  const auto key_text = Text(kv, "key");
  const auto value_text = Text(kv, "value");
  if (!key_text || !value_text) {
    return MakeError(ErrorCode::kInvalidArgument, "etcd: a kv whose key or value is not a text");
  }
  const auto key = Base64Decode(*key_text);
  const auto value = Base64Decode(*value_text);
  if (!key || !value) return MakeError(ErrorCode::kInvalidArgument, "etcd: bad base64 in a kv");
  out.key = *key;
  out.value = *value;
  out.create_revision = Int(kv, "create_revision");
  out.mod_revision = Int(kv, "mod_revision");
  out.version = Int(kv, "version");
  out.lease = Int(kv, "lease");
  return out;
}

Result<std::vector<KeyValue>> ParseKvs(const json& answer) {
  std::vector<KeyValue> out;
  const auto kvs = answer.find("kvs");
  if (kvs == answer.end()) return out;  // proto3's JSON leaves an empty list out
  if (!kvs->is_array()) return MakeError(ErrorCode::kUnavailable, "etcd: kvs is not a list");
  for (const auto& kv : *kvs) {
    if (!kv.is_object()) return MakeError(ErrorCode::kInvalidArgument, "etcd: a kv not an object");
    auto parsed = ParseKeyValue(kv);
    if (!parsed) return parsed.error();
    out.push_back(std::move(*parsed));
  }
  return out;
}

std::int64_t HeaderRevision(const json& answer) {
  const auto header = answer.find("header");
  return header != answer.end() && header->is_object() ? Int(*header, "revision") : 0;
}

const char* TargetName(Compare::Target target) {
  switch (target) {
    case Compare::Target::kVersion:
      return "VERSION";
    case Compare::Target::kCreate:
      return "CREATE";
    case Compare::Target::kMod:
      return "MOD";
    case Compare::Target::kValue:
      return "VALUE";
    case Compare::Target::kLease:
      return "LEASE";
  }
  return "MOD";
}

const char* OpName(Compare::Op op) {
  switch (op) {
    case Compare::Op::kEqual:
      return "EQUAL";
    case Compare::Op::kNotEqual:
      return "NOT_EQUAL";
    case Compare::Op::kGreater:
      return "GREATER";
    case Compare::Op::kLess:
      return "LESS";
  }
  return "EQUAL";
}

json CompareJson(const Compare& compare) {
  json out{{"key", B64(compare.key)},
           {"target", TargetName(compare.target)},
           {"result", OpName(compare.op)}};
  const std::string number = std::to_string(compare.number);
  switch (compare.target) {
    case Compare::Target::kVersion:
      out["version"] = number;
      break;
    case Compare::Target::kCreate:
      out["create_revision"] = number;
      break;
    case Compare::Target::kMod:
      out["mod_revision"] = number;
      break;
    case Compare::Target::kValue:
      out["value"] = B64(compare.value);
      break;
    case Compare::Target::kLease:
      out["lease"] = number;
      break;
  }
  return out;
}

// An answer that is not 200: etcd's gateway sends {"error", "code", "message"}.
struct GatewayError {
  int code = 0;
  std::string message;  // as etcd sent it: what the error is told by
  std::string shown;    // for errors and logs: without the secrets, cut, on one line
};

// `secrets` (the password, the token) are taken out of what is shown: a gateway or a proxy in
// front of it may echo a request back.
GatewayError ParseGatewayError(const http::Response& response,
                               std::span<const std::string> secrets) {
  GatewayError out;
  try {
    const json body = json::parse(response.body);
    if (body.is_object()) {
      const json& error =
          body.contains("error") && body["error"].is_object() ? body["error"] : body;
      out.code = error.value("code", 0);
      out.message = error.value("message", error.value("error", std::string()));
    }
  } catch (const json::exception&) {
    // etcd answers some refusals in plain text; the first line says what is wrong.
    out.message = response.body.substr(0, response.body.find('\n'));
  }
  out.shown = http::RedactSecrets(out.message, secrets);
  if (out.message.find("CommonName of client") != std::string::npos) {
    out.shown +=
        " (with auth on, etcd's JSON gateway refuses a client certificate that has a CN: use "
        "one without, or ETCD_USERNAME/ETCD_PASSWORD alone)";
  }
  if (out.shown.empty()) out.shown = fmt::format("HTTP {}", response.status);
  return out;
}

// The token no longer opens anything, and a new one would: a simple token forgotten after
// --auth-token-ttl idle seconds (Unauthenticated), or any token issued before an auth change (a
// user or role added, a password changed), which etcd then refuses as InvalidArgument, "revision
// of auth store is old", until it expires: a JWT after its whole TTL (5 minutes by default), with
// every write, lease renewal and node report of the fleet refused meanwhile. clientv3 logs in
// again on both.
bool TokenIsStale(const GatewayError& error) {
  return error.code == kGrpcUnauthenticated ||
         error.message.find("revision of auth store is old") != std::string::npos;
}

// Worth asking another member: it may have a leader, or be up.
bool TryElsewhere(const GatewayError& error, long status) {
  return status >= 500 || error.code == kGrpcUnavailable || error.code == kGrpcDeadlineExceeded ||
         error.message.find("leader") != std::string::npos ||
         error.message.find("timed out") != std::string::npos;
}

}  // namespace

std::string PrefixRangeEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(end.back());
    if (last < 0xff) {
      ++last;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

// Base64 (RFC 4648, with padding) written here rather than taken from libcrypto, so that a
// process that does not sign AWS requests never maps libcrypto (1.4 MB resident).
namespace {
constexpr char kBase64Alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int Base64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
}  // namespace

std::string Base64Encode(std::string_view data) {
  std::string out;
  out.reserve(4 * ((data.size() + 2) / 3));
  for (std::size_t i = 0; i < data.size(); i += 3) {
    const std::size_t n = std::min<std::size_t>(3, data.size() - i);
    std::uint32_t bits = 0;
    for (std::size_t k = 0; k < 3; ++k) {
      bits = (bits << 8) | (k < n ? static_cast<unsigned char>(data[i + k]) : 0U);
    }
    for (std::size_t k = 0; k < 4; ++k) {
      out.push_back(k <= n ? kBase64Alphabet[(bits >> (18 - 6 * k)) & 0x3F] : '=');
    }
  }
  return out;
}

std::optional<std::string> Base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(3 * text.size() / 4);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    // Padding only at the end of the last group: "xx==" or "xxx=".
    std::size_t padding = 0;
    if (last && text[i + 3] == '=') padding = text[i + 2] == '=' ? 2 : 1;
    std::uint32_t bits = 0;
    for (std::size_t k = 0; k < 4; ++k) {
      const int value = k < 4 - padding ? Base64Value(text[i + k]) : 0;
      if (value < 0) return std::nullopt;
      bits = (bits << 6) | static_cast<std::uint32_t>(value);
    }
    for (std::size_t k = 0; k < 3 - padding; ++k) {
      out.push_back(static_cast<char>((bits >> (16 - 8 * k)) & 0xFF));
    }
  }
  return out;
}

EtcdClient::EtcdClient(ClientOptions options, HttpFactory make_http)
    : options_(std::move(options)), make_http_(std::move(make_http)) {
  if (!make_http_) {
    make_http_ = [](const http::TlsOptions& tls) { return http::MakeCurlHttpClient(tls); };
  }
  http_ = make_http_(options_.tls);
}

std::string EtcdClient::Token() {
  std::lock_guard lock(token_mutex_);
  return token_;
}

http::Request EtcdClient::MakeRequest(const std::string& endpoint, std::string_view path,
                                      std::string body) {
  http::Request request{
      .method = "POST",
      .url = endpoint + std::string(path),
      .headers = {{"Content-Type", "application/json"}},
      .body = std::move(body),
      .timeout = options_.request_timeout,
      .connect_timeout = std::min(options_.request_timeout, std::chrono::milliseconds(1'000)),
      .cancel = options_.cancel};
  if (const std::string token = Token(); !token.empty()) {
    request.headers.emplace_back("Authorization", token);
  }
  return request;
}

std::vector<std::string> EtcdClient::Secrets() {
  std::string read;
  {
    std::lock_guard lock(token_mutex_);
    read = password_read_;
  }
  return {options_.password, std::move(read), Token()};
}

Result<std::string> EtcdClient::LoginPassword() {
  if (options_.password_file.empty()) return options_.password;
  // A file that cannot give one now fails this request as a member that does not answer
  // would: retried later (the file being written, or rendered after hsdo started).
  auto read = ReadSecretFile(options_.password_file, "ETCD_PASSWORD_FILE");
  if (!read) return MakeError(ErrorCode::kUnavailable, "etcd: {}", read.error().message);
  std::lock_guard lock(token_mutex_);
  password_read_ = *read;
  return read;
}

Result<void> EtcdClient::CheckLoginPassword() {
  if (options_.password_file.empty() || options_.username.empty() || !Token().empty()) {
    return Ok();
  }
  if (auto password = LoginPassword(); !password) return password.error();
  return Ok();
}

Result<void> EtcdClient::Authenticate(http::HttpClient& http, const std::string& endpoint) {
  auto password = LoginPassword();
  if (!password) return password.error();
  {
    std::lock_guard lock(token_mutex_);
    token_.clear();
  }
  const json body{{"name", options_.username}, {"password", *password}};
  auto response = http.Send(MakeRequest(endpoint, "/v3/auth/authenticate", body.dump()));
  if (!response) return MakeError(response.error().code, "etcd: {}", response.error().message);
  if (response->status != 200) {
    // Never the password (the one sent, whatever another thread read since); the user name
    // helps.
    std::vector<std::string> secrets = Secrets();
    secrets.push_back(*password);
    const GatewayError error = ParseGatewayError(*response, secrets);
    return MakeError(TryElsewhere(error, response->status) ? ErrorCode::kUnavailable
                                                           : ErrorCode::kInvalidArgument,
                     "etcd {}: authenticating as '{}': {}", endpoint, options_.username,
                     error.shown);
  }
  try {
    const json answer = json::parse(response->body);
    std::lock_guard lock(token_mutex_);
    token_ = answer.value("token", "");
  } catch (const json::exception&) {
    return MakeError(ErrorCode::kUnavailable, "etcd {}: authenticate: not JSON", endpoint);
  }
  return Ok();
}

Result<json> EtcdClient::CallOn(http::HttpClient& http, const std::string& endpoint,
                                std::string_view path, const std::string& body) {
  for (int attempt = 0;; ++attempt) {
    if (!options_.username.empty() && Token().empty()) {
      if (auto auth = Authenticate(http, endpoint); !auth) return auth.error();
    }
    auto response = http.Send(MakeRequest(endpoint, path, body));
    if (!response) {  // transport: kUnavailable
      return MakeError(response.error().code, "etcd: {}", response.error().message);
    }
    if (response->status == 200) {
      try {
        json answer = json::parse(response->body);
        if (answer.is_object()) return answer;
      } catch (const json::exception&) {
      }
      return MakeError(ErrorCode::kUnavailable, "etcd {}{}: answer is not a JSON object", endpoint,
                       path);
    }
    const GatewayError error = ParseGatewayError(*response, Secrets());
    // Authenticate again, once (etcd refuses a request with a stale token before applying it).
    if (TokenIsStale(error) && !options_.username.empty() && attempt == 0) {
      std::lock_guard lock(token_mutex_);
      token_.clear();
      continue;
    }
    return MakeError(
        TryElsewhere(error, response->status)
            ? ErrorCode::kUnavailable
            : (error.code == kGrpcNotFound ? ErrorCode::kNotFound : ErrorCode::kInvalidArgument),
        "etcd {}{}: {}", endpoint, path, error.shown);
  }
}

Result<json> EtcdClient::Call(std::string_view path, const json& body) {
  const std::string text = body.dump();
  std::lock_guard lock(call_mutex_);
  const std::size_t count = options_.endpoints.size();
  if (count == 0) return MakeError(ErrorCode::kInvalidArgument, "etcd: no endpoints");
  // A login due and a password file that cannot give one: no member is worth asking (review:
  // each was, a failover counted, the file read once per member).
  if (auto checked = CheckLoginPassword(); !checked) return checked.error();
  // Each member's failure, in ETCD_ENDPOINTS' order: the error of a request no member answered
  // says the same whichever member was asked first (it moves on at every such request), so
  // that the callers' "once per cause" log lines stay once.
  std::vector<std::string> failures(count);
  Error last{ErrorCode::kUnavailable, "etcd: no endpoint answered"};
  const std::size_t first = current_.load();
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t index = (first + i) % count;
    auto answer = CallOn(*http_, options_.endpoints[index], path, text);
    if (answer) {
      if (index != first) {
        spdlog::info("etcd: now talking to {}", options_.endpoints[index]);
        current_.store(index);
      }
      return answer;
    }
    if (answer.error().code != ErrorCode::kUnavailable) return answer.error();
    if (options_.cancel.stop_requested()) return answer.error();  // shutting down
    spdlog::debug("etcd: {}", answer.error().message);
    last = answer.error();
    failures[index] = answer.error().message;
    if (count > 1 && options_.on_failover) options_.on_failover();
  }
  current_.store((first + 1) % count);
  if (count == 1) return last;
  return MakeError(ErrorCode::kUnavailable, "etcd: no endpoint answered: {}",
                   fmt::join(failures, "; "));
}

Result<RangeResult> EtcdClient::Range(const std::string& key, const std::string& range_end,
                                      bool keys_only) {
  json body{{"key", B64(key)}};
  if (!range_end.empty()) body["range_end"] = B64(range_end);
  if (keys_only) body["keys_only"] = true;
  auto answer = Call("/v3/kv/range", body);
  if (!answer) return answer.error();
  // etcd always answers with its revision (1 or more), and hsdo asks no limit, so never has
  // more to page: an answer without either (a proxy's, or a limit set in front of etcd) would
  // read as a range with no keys, an empty table.
  const std::int64_t revision = HeaderRevision(*answer);
  if (revision <= 0) {
    return MakeError(ErrorCode::kUnavailable, "etcd: range: an answer without etcd's revision");
  }
  if (const auto more = Flag(*answer, "more"); more != false) {
    return MakeError(ErrorCode::kUnavailable, "etcd: range: an answer cut short (\"more\")");
  }
  auto kvs = ParseKvs(*answer);
  if (!kvs) return kvs.error();
  return RangeResult{.revision = revision, .kvs = std::move(*kvs)};
}

Result<TxnResult> EtcdClient::Txn(const TxnRequest& request) {
  json body{{"compare", json::array()}, {"success", json::array()}, {"failure", json::array()}};
  for (const auto& compare : request.compares) body["compare"].push_back(CompareJson(compare));
  for (const auto& put : request.success) {
    json p{{"key", B64(put.key)}, {"value", B64(put.value)}};
    if (put.lease != 0) p["lease"] = std::to_string(put.lease);
    body["success"].push_back({{"request_put", std::move(p)}});
  }
  for (const auto& put : request.create_if_absent) {
    // A nested txn (etcd >= 3.3): create_revision 0 means the key does not exist.
    const Compare absent{.key = put.key, .target = Compare::Target::kCreate};
    body["success"].push_back(
        {{"request_txn",
          {{"compare", json::array({CompareJson(absent)})},
           {"success", json::array({{{"request_put",
                                      {{"key", B64(put.key)}, {"value", B64(put.value)}}}}})}}}});
  }
  for (const auto& key : request.success_delete) {
    body["success"].push_back({{"request_delete_range", {{"key", B64(key)}}}});
  }
  for (const auto& key : request.failure_get) {
    body["failure"].push_back({{"request_range", {{"key", B64(key)}}}});
  }
  auto answer = Call("/v3/kv/txn", body);
  if (!answer) return answer.error();
  const auto succeeded = Flag(*answer, "succeeded");
  TxnResult result{.succeeded = succeeded.value_or(false), .revision = HeaderRevision(*answer)};
  if (result.revision <= 0 || !succeeded) {
    return MakeError(ErrorCode::kUnavailable,
                     "etcd: txn: an answer without etcd's revision or outcome");
  }
  if (!result.succeeded) {
    for (const auto& response : answer->value("responses", json::array())) {
      const auto range = response.find("response_range");
      if (range == response.end() || !range->is_object()) continue;
      auto kvs = ParseKvs(*range);
      if (!kvs) return kvs.error();
      for (auto& kv : *kvs) result.failure_kvs.push_back(std::move(kv));
    }
  }
  return result;
}

Result<std::int64_t> EtcdClient::LeaseGrant(std::chrono::seconds ttl) {
  auto answer = Call("/v3/lease/grant", json{{"TTL", std::to_string(ttl.count())}});
  if (!answer) return answer.error();
  if (const auto error = Text(*answer, "error"); !error || !error->empty()) {
    return MakeError(ErrorCode::kUnavailable, "etcd: lease grant: {}",
                     error ? *error : "an error of another shape");
  }
  const std::int64_t id = Int(*answer, "ID");
  if (id == 0) return MakeError(ErrorCode::kUnavailable, "etcd: lease grant: no lease ID");
  return id;
}

Result<std::int64_t> EtcdClient::LeaseKeepAlive(std::int64_t id) {
  // A stream in gRPC; through the gateway one request gives one {"result": ...} message.
  auto answer = Call("/v3/lease/keepalive", json{{"ID", std::to_string(id)}});
  if (!answer) return answer.error();
  const auto result = answer->find("result");
  if (result == answer->end() || !result->is_object()) {
    return MakeError(ErrorCode::kUnavailable, "etcd: lease keepalive: no result");
  }
  return Int(*result, "TTL");  // left out (0) when the lease is gone
}

Result<void> EtcdClient::LeaseRevoke(std::int64_t id) {
  auto answer = Call("/v3/lease/revoke", json{{"ID", std::to_string(id)}});
  if (!answer && answer.error().code != ErrorCode::kNotFound) return answer.error();
  return Ok();
}

Result<void> EtcdClient::Compact(std::int64_t revision) {
  auto answer = Call("/v3/kv/compaction", json{{"revision", std::to_string(revision)}});
  if (!answer && answer.error().message.find("has been compacted") == std::string::npos) {
    return answer.error();
  }
  return Ok();
}

Result<WatchEnd> EtcdClient::Watch(const std::string& key, const std::string& range_end,
                                   std::int64_t start_revision,
                                   const std::function<void(std::int64_t)>& on_events,
                                   std::stop_token stop, const std::function<void()>& on_created) {
  json create{{"key", B64(key)}};
  if (!range_end.empty()) create["range_end"] = B64(range_end);
  if (start_revision > 0) create["start_revision"] = std::to_string(start_revision);
  const std::string body = json{{"create_request", std::move(create)}}.dump();
  auto http = make_http_(options_.tls);
  const std::size_t count = options_.endpoints.size();
  if (count == 0) return MakeError(ErrorCode::kInvalidArgument, "etcd: no endpoints");
  if (auto checked = CheckLoginPassword(); !checked) return checked.error();
  const std::size_t first = current_.load();
  Error last{ErrorCode::kUnavailable, "etcd: no endpoint took the watch"};
  for (std::size_t i = 0; i < count && !stop.stop_requested(); ++i) {
    const std::string& endpoint = options_.endpoints[(first + i) % count];
    if (!options_.username.empty() && Token().empty()) {
      if (auto auth = Authenticate(*http, endpoint); !auth) {
        last = auth.error();
        continue;
      }
    }
    bool created = false;
    WatchEnd end;
    std::optional<Error> stream_error;
    std::string buffer;
    std::size_t scanned = 0;  // of `buffer`, found without a newline
    // Each message is one JSON object on its own line.
    auto on_message = [&](const json& message) -> bool {
      if (message.contains("error")) {
        const json& error = message["error"];
        const auto field = [&](const char* name) {
          const auto found = error.is_object() ? error.find(name) : error.end();
          return found != error.end() && found->is_string() ? found->get<std::string>()
                                                            : std::string();
        };
        const auto number = [&](const char* name) {
          const auto found = error.is_object() ? error.find(name) : error.end();
          return found != error.end() && found->is_number_integer() ? found->get<int>() : 0;
        };
        stream_error = MakeError(
            ErrorCode::kUnavailable, "etcd {}: watch: {}", endpoint,
            http::RedactSecrets(error.is_object() ? field("message") : error.dump(), Secrets()));
        if (error.is_object() &&
            (number("http_code") == 401 ||
             TokenIsStale({.code = number("grpc_code"), .message = field("message")}))) {
          std::lock_guard lock(token_mutex_);
          token_.clear();
        }
        return false;
      }
      const auto result = message.find("result");
      if (result == message.end() || !result->is_object()) return true;
      const bool created_now = result->value("created", false) && !created;
      if (created_now) created = true;
      if (const std::int64_t compacted = Int(*result, "compact_revision"); compacted != 0) {
        end.compact_revision = compacted;
        return false;
      }
      if (result->value("canceled", false)) {
        const std::string reason = result->value("cancel_reason", "");
        const std::string shown = http::RedactSecrets(reason, Secrets());  // before a logout
        // A watch made with a token from before an auth change is refused this way ("revision
        // of auth store is old", or "permission denied"): the next attempt logs in again (once
        // more than needed, should the user truly lack the right).
        if (!options_.username.empty() && (TokenIsStale({.code = 0, .message = reason}) ||
                                           reason.find("permission denied") != std::string::npos)) {
          std::lock_guard lock(token_mutex_);
          token_.clear();
        }
        stream_error =
            MakeError(ErrorCode::kUnavailable, "etcd {}: watch cancelled: {}", endpoint, shown);
        return false;
      }
      // Not a watch refused as it was made (created and canceled at once, as etcd answers a
      // key the user may not read: review of 28e97e3, "watching again" then "watch lost"
      // ten times a second).
      if (created_now && on_created) on_created();
      std::int64_t highest = 0;
      for (const auto& event : result->value("events", json::array())) {
        if (const auto kv = event.find("kv"); kv != event.end() && kv->is_object()) {
          highest = std::max(highest, Int(*kv, "mod_revision"));
        }
      }
      if (highest > 0) on_events(highest);
      return true;
    };
    http::Request request = MakeRequest(endpoint, "/v3/watch", body);
    request.timeout = options_.watch_timeout;
    request.cancel = stop;
    request.on_body = [&](std::string_view chunk) {
      buffer.append(chunk);
      if (buffer.size() > kMaxWatchMessageBytes) {  // one message without end (not etcd's)
        stream_error =
            MakeError(ErrorCode::kUnavailable, "etcd {}: watch: a message larger than {} MiB",
                      endpoint, kMaxWatchMessageBytes >> 20);
        return false;
      }
      std::size_t newline;
      while ((newline = buffer.find('\n', scanned)) != std::string::npos) {
        const std::string line = buffer.substr(0, newline);
        buffer.erase(0, newline + 1);
        scanned = 0;
        if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
        json message;
        try {
          message = json::parse(line);
        } catch (const json::exception&) {
          stream_error =
              MakeError(ErrorCode::kUnavailable, "etcd {}: watch: a line is not JSON", endpoint);
          return false;
        }
        try {
          if (!message.is_object() || !on_message(message)) return false;
        } catch (const json::exception&) {  // a field of another type
          stream_error = MakeError(ErrorCode::kUnavailable,
                                   "etcd {}: watch: a message of another shape", endpoint);
          return false;
        }
      }
      scanned = buffer.size();
      return !stop.stop_requested();
    };
    const auto sent_at = std::chrono::steady_clock::now();
    auto response = http->Send(request);
    if (stop.stop_requested() || end.compact_revision != 0) return end;
    // A stream that worked until its timeout (curl ends it then, give or take a millisecond
    // of its own clock): the planned end, not a broken stream (which was logged as lost and
    // moved every request to the next member, every five minutes). A stream that truly broke
    // that late is caught by the next one.
    if (created && !stream_error && !response &&
        std::chrono::steady_clock::now() - sent_at >= options_.watch_timeout * 9 / 10) {
      end.timed_out = true;
      return end;
    }
    if (response && response->status != 200) {
      // A non-200 answer's body went through on_body too; the buffer holds it.
      http::Response copy = *response;
      copy.body = buffer;
      const GatewayError error = ParseGatewayError(copy, Secrets());
      if (TokenIsStale(error)) {
        std::lock_guard lock(token_mutex_);
        token_.clear();  // the next attempt logs in again
      }
      last = MakeError(ErrorCode::kUnavailable, "etcd {}: watch: {}", endpoint, error.shown);
    } else if (stream_error) {
      last = *stream_error;
    } else if (!response) {
      last = response.error();
    } else {
      last = MakeError(ErrorCode::kUnavailable, "etcd {}: watch stream ended", endpoint);
    }
    if (created) {
      // The stream worked, then broke: let the caller read and watch again, elsewhere.
      current_.store((first + i + 1) % count);
      return last;
    }
  }
  current_.store((first + 1) % count);
  return last;
}

}  // namespace hsdo::etcd
