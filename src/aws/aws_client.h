// AwsClient: one AWS service endpoint, signed requests, and the SDKs' "standard" retry mode.
// Two protocols: JSON 1.0 (DynamoDB) and Query with XML answers (Auto Scaling, EC2).
// Secrets never leave this layer: no log line or error message carries the secret key, the
// session token, the Authorization header or a signature.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <pugixml.hpp>

#include "aws/credentials.h"
#include "aws/endpoints.h"
#include "aws/sigv4.h"
#include "common/clock.h"
#include "common/result.h"
#include "config/config.h"
#include "http/http_client.h"

namespace prometheus {
class Registry;
template <typename T>
class Family;
class Counter;
}  // namespace prometheus

namespace hsdo::aws {

// Retry timing, injected so that tests run without sleeping.
struct RetryHooks {
  // Empty: the client waits itself, and wakes as soon as AwsClientOptions::cancel is stopped.
  std::function<void(std::chrono::milliseconds)> sleep;
  std::function<double()> random;  // uniform in [0, 1)
};
RetryHooks DefaultRetryHooks();

struct AwsClientOptions {
  std::string region;
  std::string endpoint;  // base URL, no trailing slash
  int max_attempts = 3;  // total attempts (standard mode)
  std::chrono::milliseconds timeout{10'000};
  std::chrono::milliseconds connect_timeout{3'000};
  // Once stopped (the process is shutting down), a request in flight is abandoned, a retry
  // sleep ends and no further attempt is made: the call fails with kUnavailable at once.
  std::stop_token cancel;
};

// What an AWS API answered when it failed; `code` is AWS's error code
// ("ThrottlingException", "ResourceNotFoundException", ...), empty for transport errors.
struct AwsErrorDetail {
  std::string code;
  std::string message;
  long status = 0;  // 0: no HTTP answer
};

// Maps an AWS error code / HTTP status to hsdo's ErrorCode.
ErrorCode ClassifyAwsError(const AwsErrorDetail& detail);
// Standard mode: throttling codes, transient codes, 5xx, and transport errors are retried.
bool IsRetryable(const AwsErrorDetail& detail);
bool IsThrottling(std::string_view code);

// Parses an AWS error answer (JSON or XML) into code and message.
AwsErrorDetail ParseJsonError(const http::Response& response);
AwsErrorDetail ParseXmlError(const http::Response& response);

// Metrics shared by the AwsClients of one registry.
struct AwsMetrics {
  explicit AwsMetrics(prometheus::Registry& registry);
  prometheus::Family<prometheus::Counter>&
      requests;  // hsdo_aws_requests_total{service,operation,outcome}
  prometheus::Family<prometheus::Counter>& retries;  // hsdo_aws_retries_total{service,operation}
};

// Not thread-safe (like the curl handle it owns): one client per thread. The credentials
// chain it uses may be shared.
class AwsClient {
 public:
  AwsClient(Service service, AwsClientOptions options,
            std::shared_ptr<CredentialsChain> credentials, std::unique_ptr<http::HttpClient> http,
            const Clock& clock, RetryHooks hooks = DefaultRetryHooks(),
            std::shared_ptr<AwsMetrics> metrics = nullptr);

  // JSON 1.0: POST with X-Amz-Target "<target_prefix>.<operation>".
  Result<nlohmann::json> CallJson(std::string_view target_prefix, std::string_view operation,
                                  const nlohmann::json& body);
  // The same call, the answer's text unparsed (for a reader that streams it).
  Result<std::string> CallJsonText(std::string_view target_prefix, std::string_view operation,
                                   const nlohmann::json& body);
  // On failure, the AWS error details of the last CallJson/CallQuery (for callers that
  // need more than ErrorCode, e.g. DynamoDB's CancellationReasons).
  const AwsErrorDetail& last_error() const { return last_error_; }
  const nlohmann::json& last_error_body() const { return last_error_json_; }

  // Query: POST form Action/Version + params; the answer's XML document.
  using Params = std::vector<std::pair<std::string, std::string>>;
  Result<std::shared_ptr<pugi::xml_document>> CallQuery(std::string_view action,
                                                        std::string_view version,
                                                        const Params& params);

  // Waits `delay` (through the retry hooks' sleep, so tests do not), as between two attempts
  // of a request; false when the cancel token stopped the wait (or was already stopped). For
  // the caller's own retries, as of BatchGetItem's unprocessed keys.
  bool Pause(std::chrono::milliseconds delay) { return SleepBeforeRetry(delay); }

  const AwsClientOptions& options() const { return options_; }
  std::string_view service_name() const { return service_.signing_name; }

 private:
  // Sends with signing and retries; the final response (2xx) or an error.
  Result<http::Response> Send(std::string_view operation, http::Request request,
                              bool json_protocol);
  // The retry sleep; false when the cancel token stopped it (or was already stopped).
  bool SleepBeforeRetry(std::chrono::milliseconds delay);
  // After an error that says the request was signed too far from AWS's clock, with a Date
  // minutes away from this host's: takes AWS's time for the next signatures, logs it, and says
  // the request may go again.
  bool LearnClockOffset(std::string_view operation, const AwsErrorDetail& detail,
                        const http::Response& response);
  Error Cancelled(std::string_view operation, int attempts);
  // hsdo_aws_requests_total{service,operation,outcome} += 1 (when metrics are on).
  void CountRequest(std::string_view operation, std::string outcome);

  Service service_;
  AwsClientOptions options_;
  std::shared_ptr<CredentialsChain> credentials_;
  std::unique_ptr<http::HttpClient> http_;
  const Clock& clock_;
  RetryHooks hooks_;
  std::shared_ptr<AwsMetrics> metrics_;
  // The standard mode's retry quota: retries stop when an outage drains it.
  int retry_tokens_;
  SigningKeyCache signing_keys_;
  // AWS's clock minus this host's, learnt from an answer that refused a request signed too far
  // from AWS's time (LearnClockOffset); added to the time of every signature.
  std::chrono::milliseconds clock_offset_{0};
  AwsErrorDetail last_error_;
  nlohmann::json last_error_json_;
};

// The transport of the credentials chain: libcurl, verifying servers with ResolveCaBundle's
// bundle, and closing its connection after each request (credentials are fetched about once
// an hour; an STS connection kept open between would hold a parse of the CA bundle, ~3.7 MB).
// `cancel`: see MakeCurlHttpClient.
Result<std::unique_ptr<http::HttpClient>> MakeCredentialsHttpClient(const AwsConfig& config,
                                                                    std::stop_token cancel = {});

// Builds a client for `service` from the configuration: region, endpoint, and the curl
// transport of that endpoint in this process (one connection kept open per endpoint, which the
// clients of the endpoint take turns on), verifying with ResolveCaBundle's bundle. The credentials
// chain is shared between clients. `cancel`: see AwsClientOptions::cancel (pass
// Wakeup::stop_token()).
Result<std::unique_ptr<AwsClient>> MakeAwsClient(const AwsConfig& config, const Service& service,
                                                 std::shared_ptr<CredentialsChain> credentials,
                                                 const Clock& clock,
                                                 std::shared_ptr<AwsMetrics> metrics = nullptr,
                                                 RetryHooks hooks = DefaultRetryHooks(),
                                                 std::stop_token cancel = {});

// Exponential backoff with full jitter: random * min(cap, base * 2^(attempt-1)).
std::chrono::milliseconds BackoffDelay(int attempt, double random);

// An HTTP-date in the IMF-fixdate form ("Wed, 02 Dec 2026 15:40:00 GMT"), as a Date header
// carries it; nullopt for anything else.
std::optional<WallTime> ParseHttpDate(std::string_view text);

// Pagination helper: calls `page(token)` until it returns an empty next token.
// `page` returns the next token ("" at the end). Bounded, so a looping API cannot hang us.
Result<void> Paginate(const std::function<Result<std::string>(const std::string&)>& page,
                      int max_pages = 1000);

// "Name.member.N" / "Name.N" parameter lists of the Query protocol.
void AddMemberList(AwsClient::Params& params, std::string_view name,
                   const std::vector<std::string>& values, bool member_style);

}  // namespace hsdo::aws
