// The credentials chain, in the AWS SDKs' order: environment → shared files → web identity
// (STS AssumeRoleWithWebIdentity) → ECS container endpoint → EC2 instance metadata (IMDSv2).
// Temporary credentials are cached and refreshed a few minutes before they expire.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aws/sigv4.h"
#include "common/clock.h"
#include "common/result.h"
#include "config/config.h"
#include "http/http_client.h"

namespace hsdo::aws {

// One source of credentials. Fetch() returns kNotFound when the provider is not configured
// on this host (the chain then tries the next one); any other error is a failure of a
// configured provider, which stops the chain as the SDKs do.
class CredentialsProvider {
 public:
  virtual ~CredentialsProvider() = default;
  virtual std::string_view name() const = 0;
  virtual Result<Credentials> Fetch() = 0;
};

// Where the container and metadata endpoints are; tests point them at loopback.
inline constexpr std::string_view kEcsContainerHost = "http://169.254.170.2";
inline constexpr std::string_view kImdsDefaultEndpoint = "http://169.254.169.254";

std::unique_ptr<CredentialsProvider> MakeEnvironmentProvider(const AwsConfig& config);
std::unique_ptr<CredentialsProvider> MakeProfileProvider(const AwsConfig& config);
// `sts_endpoint`: base URL of STS (see ResolveEndpoint in aws_client.h).
std::unique_ptr<CredentialsProvider> MakeWebIdentityProvider(const AwsConfig& config,
                                                             std::string sts_endpoint,
                                                             http::HttpClient& http,
                                                             const Clock& clock);
std::unique_ptr<CredentialsProvider> MakeContainerProvider(const AwsConfig& config,
                                                           http::HttpClient& http);
std::unique_ptr<CredentialsProvider> MakeImdsProvider(const AwsConfig& config,
                                                      http::HttpClient& http);

// The chain: tries its providers in order and caches what it got. Thread-safe.
class CredentialsChain {
 public:
  // Refresh temporary credentials this long before they expire.
  static constexpr std::chrono::minutes kRefreshBefore{5};
  // After a failed refresh, the next one is tried this much later (the cached ones serve).
  static constexpr std::chrono::seconds kRefreshRetry{30};

  CredentialsChain(std::vector<std::unique_ptr<CredentialsProvider>> providers, const Clock& clock,
                   std::unique_ptr<http::HttpClient> owned_http = nullptr);

  Result<Credentials> Get();
  // Drops the cached credentials (AWS said they expired early): the next Get() fetches.
  void Invalidate();
  // AWS refused the credentials of `access_key_id` as unknown or invalid (`code`): a key
  // deleted or deactivated by a rotation, a token revoked, a file read half-written. Drops them
  // so the next Get() asks the chain again (a rotated file, a new metadata answer), unless they
  // were fetched less than kRefreshRetry ago (the chain would answer the same) or came from the
  // environment (read once). True when the request is worth another try: dropped, or other
  // credentials than the refused ones are cached already (another client dropped them).
  bool Reject(std::string_view code, std::string_view access_key_id);
  // The provider that gave the cached credentials ("" before the first success).
  std::string source() const;
  // AWS's clock minus this host's (AwsClient::LearnClockOffset): an Expiration is AWS's time,
  // so a host clock minutes ahead took fresh credentials for expiring ones (a fetch at every
  // request) and dropped them before they expired.
  void SetClockOffset(std::chrono::milliseconds offset);

 private:
  Result<Credentials> FetchFromChain();

  std::unique_ptr<http::HttpClient> owned_http_;  // declared first: providers use it
  std::vector<std::unique_ptr<CredentialsProvider>> providers_;
  const Clock& clock_;
  mutable std::mutex mutex_;
  std::optional<Credentials> cached_;
  std::chrono::milliseconds clock_offset_{0};
  std::string source_;
  std::optional<SteadyTime> fetched_at_;  // the last successful fetch
  // A refresh that failed while the cached credentials were still good: the next try waits
  // kRefreshRetry (each try may wait for a provider's timeout, and every request asks).
  std::optional<WallTime> refresh_failed_at_;
};

// The SDKs' default chain for `config`. `http` carries the remote providers' requests
// (STS, container endpoint, IMDS); the metadata provider is left out when
// ec2_metadata_disabled is set.
std::shared_ptr<CredentialsChain> MakeDefaultCredentialsChain(
    const AwsConfig& config, const Clock& clock, std::unique_ptr<http::HttpClient> http);

// kInvalidArgument when the profile AWS_PROFILE names has no keys and would give its credentials
// in a way hsdo does not support (role_arn, credential_process, SSO), and nothing else is
// configured before the instance's role (keys, web identity or the container endpoint in the
// environment): the chain would sign as another identity. The same in the default profile, or
// beside keys, is a warning.
Result<void> CheckProfileSupported(const AwsConfig& config);

// ISO 8601 UTC ("2026-11-25T13:00:00Z", with an optional fraction or "+00:00").
std::optional<WallTime> ParseIso8601(std::string_view text);

}  // namespace hsdo::aws
