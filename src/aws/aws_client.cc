#include "aws/aws_client.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <map>
#include <mutex>
#include <optional>
#include <random>

#include <fmt/format.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include "aws/sigv4.h"
#include "common/sleep.h"
#include "http/redact.h"

namespace hsdo::aws {

namespace {

constexpr std::chrono::milliseconds kBackoffBase{100};
constexpr std::chrono::milliseconds kBackoffCap{20'000};
// The standard mode's retry quota (the SDKs' numbers): a retry costs 5 tokens, one after a
// timeout 10, a success gives back 1.
constexpr int kRetryQuota = 500;
constexpr int kRetryCost = 5;
constexpr int kTimeoutRetryCost = 10;

constexpr std::array<std::string_view, 14> kThrottlingCodes = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
};
constexpr std::array<std::string_view, 4> kTransientCodes = {
    "RequestTimeout", "RequestTimeoutException", "IDPCommunicationError", "InternalError"};

// Error codes that mean "your temporary credentials are stale": fetch new ones and retry.
bool IsExpiredCredentials(std::string_view code) {
  return code == "ExpiredToken" || code == "ExpiredTokenException" || code == "RequestExpired";
}

// Error codes that mean "AWS does not know or accept these credentials" (an access key deleted
// or deactivated by a rotation, a token revoked, a secret read half-written): ask the chain
// again, in case its source now holds new ones (CredentialsChain::Reject paces it).
bool IsRejectedCredentials(std::string_view code) {
  return code == "UnrecognizedClientException" || code == "InvalidClientTokenId" ||
         code == "AuthFailure" || code == "SignatureDoesNotMatch" ||
         code == "IncompleteSignature" || code == "InvalidSignatureException";
}

// What AWS answers a request signed too far from its own clock (5 minutes), as the SDKs list
// it. Some of these codes also mean a bad signature: only an answer whose Date is minutes away
// from this host's clock makes them a skew (AwsClient::LearnClockOffset).
bool IsClockSkewError(std::string_view code) {
  return code == "RequestTimeTooSkewed" || code == "RequestExpired" ||
         code == "RequestInTheFuture" || code == "InvalidSignatureException" ||
         code == "SignatureDoesNotMatch" || code == "AuthFailure";
}

// The clock offset below which nothing is corrected: AWS accepts 5 minutes.
constexpr auto kClockSkewToCorrect = std::chrono::minutes(4);

// A metric label value from an error code a server sent: bounded to a safe character set.
std::string OutcomeLabel(std::string_view code) {
  if (code.empty() || code.size() > 64) return "error";
  for (const char c : code) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_') return "error";
  }
  return std::string(code);
}

std::string AfterLast(std::string_view text, char separator) {
  const auto pos = text.rfind(separator);
  return std::string(pos == std::string_view::npos ? text : text.substr(pos + 1));
}

}  // namespace

std::optional<WallTime> ParseHttpDate(std::string_view text) {
  // IMF-fixdate, the only form HTTP/1.1 servers send (RFC 9110): "Wed, 02 Dec 2026 15:40:00 GMT".
  static constexpr std::array<std::string_view, 12> kMonths = {
      "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  if (text.size() != 29 || text.substr(3, 2) != ", " || text.substr(25) != " GMT") {
    return std::nullopt;
  }
  const auto number = [&](std::size_t at, std::size_t length) -> std::optional<int> {
    const std::string_view digits = text.substr(at, length);
    if (!std::all_of(digits.begin(), digits.end(),
                     [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
      return std::nullopt;
    }
    int value = 0;
    std::from_chars(digits.data(), digits.data() + digits.size(), value);
    return value;
  };
  const auto month = std::find(kMonths.begin(), kMonths.end(), text.substr(8, 3));
  const auto day = number(5, 2);
  const auto year = number(12, 4);
  const auto hour = number(17, 2);
  const auto minute = number(20, 2);
  const auto second = number(23, 2);
  // Years a system_clock time point holds (nanoseconds: 1677-2262), and then some.
  if (month == kMonths.end() || !day || !year || !hour || !minute || !second || text[7] != ' ' ||
      text[11] != ' ' || text[16] != ' ' || text[19] != ':' || text[22] != ':' || *year < 1970 ||
      *year > 2200 || *hour > 23 || *minute > 59 || *second > 60) {
    return std::nullopt;
  }
  const std::chrono::year_month_day date{
      std::chrono::year{*year},
      std::chrono::month{static_cast<unsigned>(month - kMonths.begin() + 1)},
      std::chrono::day{static_cast<unsigned>(*day)}};
  if (!date.ok()) return std::nullopt;
  return std::chrono::sys_days{date} + std::chrono::hours{*hour} + std::chrono::minutes{*minute} +
         std::chrono::seconds{*second};
}

RetryHooks DefaultRetryHooks() {
  return RetryHooks{
      .sleep = nullptr,  // AwsClient::SleepBeforeRetry: a wait that its cancel token ends
      .random =
          [] {
            thread_local std::mt19937_64 engine{std::random_device{}()};
            return std::uniform_real_distribution<double>(0.0, 1.0)(engine);
          },
  };
}

bool IsThrottling(std::string_view code) {
  return std::find(kThrottlingCodes.begin(), kThrottlingCodes.end(), code) !=
         kThrottlingCodes.end();
}

bool IsRetryable(const AwsErrorDetail& detail) {
  if (detail.status == 0) return true;  // transport error
  if (IsThrottling(detail.code)) return true;
  if (std::find(kTransientCodes.begin(), kTransientCodes.end(), detail.code) !=
      kTransientCodes.end()) {
    return true;
  }
  return detail.status == 429 || detail.status == 500 || detail.status == 502 ||
         detail.status == 503 || detail.status == 504;
}

ErrorCode ClassifyAwsError(const AwsErrorDetail& detail) {
  if (IsRetryable(detail)) return ErrorCode::kUnavailable;
  const std::string_view code = detail.code;
  if (code == "ResourceNotFoundException" || code.ends_with(".NotFound")) {
    return ErrorCode::kNotFound;
  }
  if (code == "ConditionalCheckFailedException" || code == "TransactionCanceledException" ||
      code == "ResourceInUseException") {
    return ErrorCode::kConflict;
  }
  if (code == "ValidationException" || code == "ValidationError" ||
      code == "InvalidParameterValue" || code == "InvalidParameterCombination" ||
      code == "SerializationException") {
    return ErrorCode::kInvalidArgument;
  }
  return ErrorCode::kGeneric;
}

AwsErrorDetail ParseJsonError(const http::Response& response) {
  AwsErrorDetail detail{.status = response.status};
  // "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException" in the body, or the
  // x-amzn-ErrorType header "Code:http://...".
  try {
    const auto json = nlohmann::json::parse(response.body);
    if (json.is_object()) {
      if (json.contains("__type") && json["__type"].is_string()) {
        detail.code = AfterLast(json["__type"].get<std::string>(), '#');
      }
      for (const char* key : {"message", "Message"}) {
        if (json.contains(key) && json[key].is_string()) detail.message = json[key];
      }
    }
  } catch (const nlohmann::json::exception&) {
    // Not JSON (a proxy's HTML page, say): the status tells enough.
  }
  if (detail.code.empty()) {
    const std::string header = response.Header("x-amzn-ErrorType");
    detail.code = header.substr(0, header.find(':'));
  }
  // An authentication front end answering a JSON service in XML (moto's IAM checks do): its
  // code still says what was refused.
  const auto first = response.body.find_first_not_of(" \t\r\n");
  if (detail.code.empty() && first != std::string::npos && response.body[first] == '<') {
    return ParseXmlError(response);
  }
  return detail;
}

AwsErrorDetail ParseXmlError(const http::Response& response) {
  AwsErrorDetail detail{.status = response.status};
  pugi::xml_document doc;
  if (doc.load_buffer(response.body.data(), response.body.size())) {
    const pugi::xml_node error = doc.find_node(
        [](const pugi::xml_node& node) { return std::string_view(node.name()) == "Error"; });
    detail.code = error.child_value("Code");
    detail.message = error.child_value("Message");
  }
  return detail;
}

AwsMetrics::AwsMetrics(prometheus::Registry& registry)
    : requests(prometheus::BuildCounter()
                   .Name("hsdo_aws_requests_total")
                   .Help("AWS API calls by service, operation and outcome (ok or an error code)")
                   .Register(registry)),
      retries(prometheus::BuildCounter()
                  .Name("hsdo_aws_retries_total")
                  .Help("AWS API attempts retried after throttling, 5xx or transport errors")
                  .Register(registry)) {}

AwsClient::AwsClient(Service service, AwsClientOptions options,
                     std::shared_ptr<CredentialsChain> credentials,
                     std::unique_ptr<http::HttpClient> http, const Clock& clock, RetryHooks hooks,
                     std::shared_ptr<AwsMetrics> metrics)
    : service_(service),
      options_(std::move(options)),
      credentials_(std::move(credentials)),
      http_(std::move(http)),
      clock_(clock),
      hooks_(std::move(hooks)),
      metrics_(std::move(metrics)),
      retry_tokens_(kRetryQuota) {
  if (options_.max_attempts < 1) options_.max_attempts = 1;
}

std::chrono::milliseconds BackoffDelay(int attempt, double random) {
  const int exponent = std::clamp(attempt - 1, 0, 20);
  const auto ceiling = std::min<std::chrono::milliseconds::rep>(
      kBackoffCap.count(), kBackoffBase.count() * (std::int64_t{1} << exponent));
  return std::chrono::milliseconds(
      static_cast<std::chrono::milliseconds::rep>(std::clamp(random, 0.0, 1.0) * ceiling));
}

Result<http::Response> AwsClient::Send(std::string_view operation, http::Request request,
                                       bool json_protocol) {
  last_error_ = {};
  last_error_json_ = nullptr;
  if (!request.cancel.stop_possible()) request.cancel = options_.cancel;
  for (int attempt = 1;; ++attempt) {
    if (options_.cancel.stop_requested()) return Cancelled(operation, attempt - 1);
    auto credentials = credentials_->Get();
    if (!credentials) {
      CountRequest(operation, "credentials");
      // "No credentials found" is not the absence of what the request names: callers read
      // kNotFound as "no such table" (and said to run `hsdo init-table`).
      Error error = credentials.error();
      if (error.code == ErrorCode::kNotFound) error.code = ErrorCode::kUnavailable;
      return error;
    }
    http::Request signed_request = request;
    SignRequest(signed_request, *credentials,
                {.region = options_.region,
                 .service = std::string(service_.signing_name),
                 .time = clock_.Now() + clock_offset_},
                &signing_keys_);
    std::vector<std::string> secrets = {credentials->secret_access_key, credentials->session_token};
    for (const auto& [name, value] : signed_request.headers) {
      if (name == "Authorization") {
        secrets.push_back(value);
        secrets.push_back(AfterLast(value, '='));  // the signature alone
      }
    }

    auto response = http_->Send(signed_request);
    if (!response && options_.cancel.stop_requested()) return Cancelled(operation, attempt);
    AwsErrorDetail detail;
    if (!response) {
      detail = {.code = "", .message = response.error().message, .status = 0};
    } else if (response->status >= 200 && response->status < 300) {
      retry_tokens_ = std::min(kRetryQuota, retry_tokens_ + (attempt == 1 ? 1 : kRetryCost));
      CountRequest(operation, "ok");
      spdlog::debug("aws {} {}: HTTP {} (attempt {})", service_.signing_name, operation,
                    response->status, attempt);
      return std::move(*response);
    } else {
      detail = json_protocol ? ParseJsonError(*response) : ParseXmlError(*response);
      if (json_protocol) {
        try {
          last_error_json_ = nlohmann::json::parse(response->body);
        } catch (const nlohmann::json::exception&) {
          last_error_json_ = nullptr;
        }
      }
    }
    // An answer that says nothing AWS's way (a proxy's HTML page): its own text (made one line
    // and cut by RedactSecrets), else the error read "aws autoscaling X:  (HTTP 503, ...)".
    if (response && detail.code.empty() && detail.message.empty()) {
      detail.message = response->body;
    }
    detail.message = http::RedactSecrets(detail.message, secrets);
    detail.code = http::RedactSecrets(detail.code, secrets);
    last_error_ = detail;

    // A request signed too far from AWS's clock (RequestExpired also means stale credentials:
    // not when the answer's Date says the clock is off).
    const bool skewed = response && LearnClockOffset(operation, detail, *response);
    // Credentials that can expire: temporary ones (with an expiration) and session tokens
    // without one (a profile file that another tool rotates: the file is read again).
    const bool expired = !skewed && IsExpiredCredentials(detail.code) &&
                         (credentials->expiration || !credentials->session_token.empty());
    if (expired) credentials_->Invalidate();
    // Refused ones (long-term keys too: a rotated credentials file is read again).
    const bool rejected = !skewed && !expired && IsRejectedCredentials(detail.code) &&
                          credentials_->Reject(detail.code, credentials->access_key_id);
    const int cost = detail.status == 0 ? kTimeoutRetryCost : kRetryCost;
    if (attempt < options_.max_attempts && (IsRetryable(detail) || expired || skewed || rejected) &&
        retry_tokens_ >= cost) {
      retry_tokens_ -= cost;
      const auto delay = BackoffDelay(attempt, hooks_.random());
      spdlog::debug("aws {} {}: {} (HTTP {}), retry {} in {} ms", service_.signing_name, operation,
                    detail.code.empty() ? detail.message : detail.code, detail.status, attempt,
                    delay.count());
      if (metrics_) {
        metrics_->retries
            .Add({{"service", std::string(service_.signing_name)},
                  {"operation", std::string(operation)}})
            .Increment();
      }
      if (!SleepBeforeRetry(delay)) return Cancelled(operation, attempt);
      continue;
    }
    CountRequest(operation, detail.code.empty() ? fmt::format("http_{}", detail.status)
                                                : OutcomeLabel(detail.code));
    if (detail.status == 0) {
      return MakeError(ErrorCode::kUnavailable, "aws {} {}: {} (after {} attempts)",
                       service_.signing_name, operation, detail.message, attempt);
    }
    return MakeError(ClassifyAwsError(detail), "aws {} {}: {}{}{} (HTTP {}, {} attempts)",
                     service_.signing_name, operation, detail.code,
                     detail.code.empty() || detail.message.empty() ? "" : ": ", detail.message,
                     detail.status, attempt);
  }
}

bool AwsClient::LearnClockOffset(std::string_view operation, const AwsErrorDetail& detail,
                                 const http::Response& response) {
  if (!IsClockSkewError(detail.code)) return false;
  const auto server = ParseHttpDate(response.Header("Date"));
  if (!server) return false;
  auto offset = std::chrono::duration_cast<std::chrono::milliseconds>(*server - clock_.Now());
  if (std::chrono::abs(offset - clock_offset_) < kClockSkewToCorrect) return false;  // no skew
  // A clock within AWS's tolerance needs nothing: the Date is whole seconds, and late.
  if (std::chrono::abs(offset) < kClockSkewToCorrect) offset = std::chrono::milliseconds{0};
  clock_offset_ = offset;
  credentials_->SetClockOffset(offset);
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(offset).count();
  if (seconds == 0) {
    spdlog::warn("aws {} {}: {}: this host's clock is right again; signing with it",
                 service_.signing_name, operation, detail.code);
  } else {
    spdlog::warn(
        "aws {} {}: {}: this host's clock is {} s {} AWS's (the Date of its answer): signing "
        "at AWS's time from now on; set this host's clock right (NTP)",
        service_.signing_name, operation, detail.code, std::abs(seconds),
        seconds > 0 ? "behind" : "ahead of");
  }
  return true;
}

bool AwsClient::SleepBeforeRetry(std::chrono::milliseconds delay) {
  if (hooks_.sleep) {
    hooks_.sleep(delay);
    return !options_.cancel.stop_requested();
  }
  return SleepUnlessStopped(delay, options_.cancel);
}

void AwsClient::CountRequest(std::string_view operation, std::string outcome) {
  if (!metrics_) return;
  metrics_->requests
      .Add({{"service", std::string(service_.signing_name)},
            {"operation", std::string(operation)},
            {"outcome", std::move(outcome)}})
      .Increment();
}

Error AwsClient::Cancelled(std::string_view operation, int attempts) {
  CountRequest(operation, "cancelled");
  last_error_ = {.code = "", .message = "cancelled", .status = 0};
  return MakeError(ErrorCode::kUnavailable, "aws {} {}: cancelled (stopping) after {} attempts",
                   service_.signing_name, operation, attempts);
}

Result<nlohmann::json> AwsClient::CallJson(std::string_view target_prefix,
                                           std::string_view operation, const nlohmann::json& body) {
  auto text = CallJsonText(target_prefix, operation, body);
  if (!text) return text.error();
  // Every DynamoDB answer is a JSON object ({} at least). Read as {}, an empty body would be a
  // GetItem of no item: a leader that read its lease so stood down.
  try {
    auto answer = nlohmann::json::parse(*text);
    if (answer.is_object()) return answer;
  } catch (const nlohmann::json::exception&) {
  }
  return MakeError(ErrorCode::kUnavailable, "aws {} {}: answer is not a JSON object",
                   service_.signing_name, operation);
}

Result<std::string> AwsClient::CallJsonText(std::string_view target_prefix,
                                            std::string_view operation,
                                            const nlohmann::json& body) {
  http::Request request{
      .method = "POST",
      .url = options_.endpoint + "/",
      .headers = {{"Content-Type", "application/x-amz-json-1.0"},
                  {"X-Amz-Target", fmt::format("{}.{}", target_prefix, operation)}},
      .body = body.dump(),
      .timeout = options_.timeout,
      .connect_timeout = options_.connect_timeout};
  auto response = Send(operation, std::move(request), /*json_protocol=*/true);
  if (!response) return response.error();
  return std::move(response->body);
}

Result<std::shared_ptr<pugi::xml_document>> AwsClient::CallQuery(std::string_view action,
                                                                 std::string_view version,
                                                                 const Params& params) {
  std::string body =
      fmt::format("Action={}&Version={}", http::UrlEncode(action), http::UrlEncode(version));
  for (const auto& [key, value] : params) {
    body += '&';
    body += http::UrlEncode(key);
    body += '=';
    body += http::UrlEncode(value);
  }
  http::Request request{
      .method = "POST",
      .url = options_.endpoint + "/",
      .headers = {{"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"}},
      .body = std::move(body),
      .timeout = options_.timeout,
      .connect_timeout = options_.connect_timeout};
  auto response = Send(action, std::move(request), /*json_protocol=*/false);
  if (!response) return response.error();
  auto doc = std::make_shared<pugi::xml_document>();
  if (!doc->load_buffer(response->body.data(), response->body.size())) {
    return MakeError(ErrorCode::kUnavailable, "aws {} {}: answer is not XML", service_.signing_name,
                     action);
  }
  return doc;
}

Result<std::unique_ptr<http::HttpClient>> MakeCredentialsHttpClient(const AwsConfig& config,
                                                                    std::stop_token cancel) {
  auto ca_bundle = ResolveCaBundle(config);
  if (!ca_bundle) return ca_bundle.error();
  return http::MakeCurlHttpClient({.ca_file = std::move(*ca_bundle)}, std::move(cancel),
                                  http::Connections::kClose);
}

namespace {

// One transport that the AwsClients of one endpoint take turns on, so that a process keeps one
// connection open per AWS endpoint, not one per client: on TLS, each connection of Debian's
// libcurl-gnutls holds its own parse of the CA bundle (about 3.7 MB for the system's 145 CAs),
// and an agent's table and node reports are both on DynamoDB. The lock keeps it right when
// two threads share it: the orchestrator's leader renews its lease while its Auto Scaling
// source's request runs on another thread, and behind one AWS_ENDPOINT_URL for every
// service (an emulator) the renewal waits for that request, which its timeout bounds.
// Requests carry their client's cancel token.
struct TurnTakingTransport {
  std::mutex mutex;
  std::unique_ptr<http::HttpClient> http;
};

class SharedTransport final : public http::HttpClient {
 public:
  explicit SharedTransport(std::shared_ptr<TurnTakingTransport> transport)
      : transport_(std::move(transport)) {}
  Result<http::Response> Send(const http::Request& request) override {
    std::lock_guard lock(transport_->mutex);
    return transport_->http->Send(request);
  }

 private:
  std::shared_ptr<TurnTakingTransport> transport_;
};

// The transport of `endpoint` verified with `ca_file`: the one already in use, else a new one.
std::unique_ptr<http::HttpClient> TransportFor(const std::string& endpoint,
                                               const std::string& ca_file) {
  static std::mutex mutex;
  static std::map<std::string, std::weak_ptr<TurnTakingTransport>> in_use;
  std::lock_guard lock(mutex);
  auto& slot = in_use[endpoint + '\n' + ca_file];
  auto transport = slot.lock();
  if (!transport) {
    transport = std::make_shared<TurnTakingTransport>();
    transport->http = http::MakeCurlHttpClient({.ca_file = ca_file});
    slot = transport;
  }
  return std::make_unique<SharedTransport>(std::move(transport));
}

}  // namespace

Result<std::unique_ptr<AwsClient>> MakeAwsClient(const AwsConfig& config, const Service& service,
                                                 std::shared_ptr<CredentialsChain> credentials,
                                                 const Clock& clock,
                                                 std::shared_ptr<AwsMetrics> metrics,
                                                 RetryHooks hooks, std::stop_token cancel) {
  const std::string region = ResolveRegion(config);
  auto endpoint = ResolveEndpoint(config, service, region);
  if (!endpoint) return endpoint.error();
  if (region.empty()) {
    // An overridden endpoint (an emulator) still needs a region in the signature.
    return MakeError(ErrorCode::kInvalidArgument,
                     "no AWS region for {}: set AWS_REGION or AWS_DEFAULT_REGION, or a region "
                     "in the profile",
                     service.signing_name);
  }
  auto ca_bundle = ResolveCaBundle(config);
  if (!ca_bundle) return ca_bundle.error();
  AwsClientOptions options{.region = region,
                           .endpoint = *endpoint,
                           .max_attempts = config.max_attempts > 0 ? config.max_attempts : 3,
                           .timeout = config.request_timeout,
                           .cancel = cancel};
  spdlog::debug("aws {}: endpoint {}, region {}", service.signing_name, options.endpoint, region);
  auto http = TransportFor(options.endpoint, *ca_bundle);
  return std::make_unique<AwsClient>(service, std::move(options), std::move(credentials),
                                     std::move(http), clock, std::move(hooks), std::move(metrics));
}

Result<void> Paginate(const std::function<Result<std::string>(const std::string&)>& page,
                      int max_pages) {
  std::string token;
  for (int i = 0; i < max_pages; ++i) {
    auto next = page(token);
    if (!next) return next.error();
    if (next->empty()) return Ok();
    if (*next == token) {
      return MakeError(ErrorCode::kUnavailable, "pagination token repeated: stopping");
    }
    token = std::move(*next);
  }
  return MakeError(ErrorCode::kUnavailable, "more than {} pages: stopping", max_pages);
}

void AddMemberList(AwsClient::Params& params, std::string_view name,
                   const std::vector<std::string>& values, bool member_style) {
  for (std::size_t i = 0; i < values.size(); ++i) {
    params.emplace_back(
        member_style ? fmt::format("{}.member.{}", name, i + 1) : fmt::format("{}.{}", name, i + 1),
        values[i]);
  }
}

}  // namespace hsdo::aws
