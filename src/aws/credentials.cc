#include "aws/credentials.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>

#include "aws/aws_client.h"
#include "aws/endpoints.h"
#include "aws/profile.h"
#include "common/validate.h"
#include "http/redact.h"

namespace hsdo::aws {

namespace {

// Metadata endpoints answer quickly or not at all (the SDKs wait one second).
constexpr std::chrono::milliseconds kMetadataTimeout{2'000};
constexpr std::chrono::milliseconds kMetadataConnectTimeout{1'000};
constexpr std::string_view kImdsTokenTtlSeconds = "21600";

// An IAM role name: 1-64 of [A-Za-z0-9+=,.@_-] (it goes into a request's path; "." and ".."
// would be path segments).
bool IsIamRoleName(std::string_view role) {
  if (role.empty() || role.size() > 64 || role == "." || role == "..") return false;
  return std::all_of(role.begin(), role.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
           std::string_view("+=,.@_-").find(c) != std::string_view::npos;
  });
}

Error NotConfigured(std::string_view what) {
  return MakeError(ErrorCode::kNotFound, "{}: not configured", what);
}

Result<std::string> ReadSmallFile(const std::string& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return MakeError(ErrorCode::kInvalidArgument, "{}: cannot read {}", what, path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string text = buffer.str();
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.pop_back();
  }
  return text;
}

// The JSON shape shared by the container endpoint and IMDS.
Result<Credentials> ParseJsonCredentials(std::string_view body, std::string_view what) {
  try {
    const auto json = nlohmann::json::parse(body);
    if (json.contains("Code") && json["Code"].is_string() && json["Code"] != "Success") {
      return MakeError(ErrorCode::kUnavailable, "{}: answered Code {}", what,
                       json["Code"].get<std::string>());
    }
    Credentials credentials{.access_key_id = json.at("AccessKeyId").get<std::string>(),
                            .secret_access_key = json.at("SecretAccessKey").get<std::string>(),
                            .session_token = json.value("Token", "")};
    if (json.contains("Expiration") && json["Expiration"].is_string()) {
      credentials.expiration = ParseIso8601(json["Expiration"].get<std::string>());
      if (!credentials.expiration) {
        return MakeError(ErrorCode::kInvalidArgument, "{}: bad Expiration", what);
      }
    }
    if (credentials.access_key_id.empty() || credentials.secret_access_key.empty()) {
      return MakeError(ErrorCode::kInvalidArgument, "{}: empty credentials", what);
    }
    return credentials;
  } catch (const nlohmann::json::exception&) {
    // Never quote the body: it holds the secret.
    return MakeError(ErrorCode::kInvalidArgument, "{}: answer is not the expected JSON", what);
  }
}

class EnvironmentProvider final : public CredentialsProvider {
 public:
  explicit EnvironmentProvider(const AwsConfig& config)
      : credentials_{config.access_key_id, config.secret_access_key, config.session_token, {}} {}
  std::string_view name() const override { return "environment"; }
  Result<Credentials> Fetch() override {
    if (credentials_.access_key_id.empty() && credentials_.secret_access_key.empty()) {
      return NotConfigured("environment credentials");
    }
    if (credentials_.access_key_id.empty() || credentials_.secret_access_key.empty()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together");
    }
    return credentials_;
  }

 private:
  Credentials credentials_;
};

class ProfileProvider final : public CredentialsProvider {
 public:
  explicit ProfileProvider(const AwsConfig& config) : config_(config) {}
  std::string_view name() const override { return "profile"; }
  Result<Credentials> Fetch() override {
    // Read on every fetch: the files are small and the result is cached by the chain
    // (long-term keys are never refreshed, so this runs once).
    const auto settings = LoadProfile(config_);
    auto get = [&](const char* key) {
      auto it = settings.find(key);
      return it == settings.end() ? std::string() : it->second;
    };
    Credentials credentials{
        get("aws_access_key_id"), get("aws_secret_access_key"), get("aws_session_token"), {}};
    if (credentials.access_key_id.empty() && credentials.secret_access_key.empty()) {
      return NotConfigured(fmt::format("profile {}", ProfileName(config_)));
    }
    if (credentials.access_key_id.empty() || credentials.secret_access_key.empty()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "profile {}: aws_access_key_id and aws_secret_access_key must be set "
                       "together",
                       ProfileName(config_));
    }
    return credentials;
  }

 private:
  AwsConfig config_;
};

class WebIdentityProvider final : public CredentialsProvider {
 public:
  WebIdentityProvider(const AwsConfig& config, std::string sts_endpoint, http::HttpClient& http,
                      const Clock& clock)
      : token_file_(config.web_identity_token_file),
        role_arn_(config.role_arn),
        session_name_(config.role_session_name),
        sts_endpoint_(std::move(sts_endpoint)),
        http_(http),
        clock_(clock) {}
  std::string_view name() const override { return "web-identity"; }

  Result<Credentials> Fetch() override {
    if (token_file_.empty() || role_arn_.empty()) return NotConfigured("web identity");
    if (sts_endpoint_.empty()) {
      return MakeError(ErrorCode::kInvalidArgument, "web identity: no STS endpoint (no region)");
    }
    auto token = ReadSmallFile(token_file_, "AWS_WEB_IDENTITY_TOKEN_FILE");
    if (!token) return token.error();
    const std::string session =
        session_name_.empty()
            ? fmt::format("hsdo-{}", std::chrono::duration_cast<std::chrono::seconds>(
                                         clock_.Now().time_since_epoch())
                                         .count())
            : session_name_;
    // Unsigned Query request: the web identity token is the proof.
    const std::string body = fmt::format(
        "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}&RoleSessionName={}"
        "&WebIdentityToken={}",
        http::UrlEncode(role_arn_), http::UrlEncode(session), http::UrlEncode(*token));
    auto response = http_.Send(
        {.method = "POST",
         .url = sts_endpoint_ + "/",
         .headers = {{"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"}},
         .body = body});
    if (!response) return response.error();
    pugi::xml_document doc;
    if (!doc.load_buffer(response->body.data(), response->body.size())) {
      return MakeError(ErrorCode::kUnavailable,
                       "STS AssumeRoleWithWebIdentity: HTTP {}, answer is not XML",
                       response->status);
    }
    if (response->status != 200) {
      const AwsErrorDetail detail = ParseXmlError(*response);
      const std::string secrets[] = {*token};
      // The web identity token is a credential too: never quoted back.
      return MakeError(
          response->status >= 500 ? ErrorCode::kUnavailable : ErrorCode::kInvalidArgument,
          "STS AssumeRoleWithWebIdentity: HTTP {} {}: {}", response->status,
          http::RedactSecrets(detail.code, secrets), http::RedactSecrets(detail.message, secrets));
    }
    const pugi::xml_node creds = doc.child("AssumeRoleWithWebIdentityResponse")
                                     .child("AssumeRoleWithWebIdentityResult")
                                     .child("Credentials");
    Credentials credentials{creds.child_value("AccessKeyId"), creds.child_value("SecretAccessKey"),
                            creds.child_value("SessionToken"),
                            ParseIso8601(creds.child_value("Expiration"))};
    if (credentials.access_key_id.empty() || credentials.secret_access_key.empty()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "STS AssumeRoleWithWebIdentity: no credentials in the answer");
    }
    return credentials;
  }

 private:
  std::string token_file_, role_arn_, session_name_, sts_endpoint_;
  http::HttpClient& http_;
  const Clock& clock_;
};

// The SDKs accept an http FULL_URI only on loopback or the ECS/EKS link-local hosts;
// anything else must be https.
bool IsAllowedContainerUrl(std::string_view url) {
  const auto parts = ParseUrl(url);
  if (!parts) return false;
  if (parts->scheme == "https") return true;
  if (parts->scheme != "http") return false;
  if (parts->hostname == "localhost" || parts->hostname == "169.254.170.2" ||
      parts->hostname == "169.254.170.23" || parts->hostname == "fd00:ec2::23") {
    return true;
  }
  const auto ip = CanonicalIp(parts->hostname);
  return ip && (ip->starts_with("127.") || *ip == "::1");
}

class ContainerProvider final : public CredentialsProvider {
 public:
  ContainerProvider(const AwsConfig& config, http::HttpClient& http)
      : config_(config), http_(http) {}
  std::string_view name() const override { return "container"; }

  Result<Credentials> Fetch() override {
    std::string url;
    if (!config_.container_credentials_relative_uri.empty()) {
      url = std::string(kEcsContainerHost) + config_.container_credentials_relative_uri;
    } else if (!config_.container_credentials_full_uri.empty()) {
      url = config_.container_credentials_full_uri;
      if (!IsAllowedContainerUrl(url)) {
        return MakeError(ErrorCode::kInvalidArgument,
                         "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, or http on a "
                         "loopback or ECS/EKS address");
      }
    } else {
      return NotConfigured("container credentials");
    }
    http::Request request{
        .url = url, .timeout = kMetadataTimeout, .connect_timeout = kMetadataConnectTimeout};
    std::string token = config_.container_authorization_token;
    // The file wins: EKS Pod Identity rotates the token in it.
    if (!config_.container_authorization_token_file.empty()) {
      auto from_file = ReadSmallFile(config_.container_authorization_token_file,
                                     "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
      if (!from_file) return from_file.error();
      token = *from_file;
    }
    if (!token.empty()) request.headers.emplace_back("Authorization", token);
    auto response = http_.Send(request);
    if (!response) return response.error();
    if (response->status != 200) {
      return MakeError(
          response->status >= 500 ? ErrorCode::kUnavailable : ErrorCode::kInvalidArgument,
          "container credentials endpoint: HTTP {}", response->status);
    }
    return ParseJsonCredentials(response->body, "container credentials endpoint");
  }

 private:
  AwsConfig config_;
  http::HttpClient& http_;
};

class ImdsProvider final : public CredentialsProvider {
 public:
  ImdsProvider(const AwsConfig& config, http::HttpClient& http)
      : endpoint_(config.ec2_metadata_service_endpoint.empty()
                      ? std::string(kImdsDefaultEndpoint)
                      : config.ec2_metadata_service_endpoint),
        disabled_(config.ec2_metadata_disabled),
        http_(http) {
    while (endpoint_.ends_with('/')) endpoint_.pop_back();
  }
  std::string_view name() const override { return "ec2-metadata"; }

  Result<Credentials> Fetch() override {
    if (disabled_) return NotConfigured("EC2 instance metadata (disabled)");
    // IMDSv2: a session token first (PUT), then every GET carries it.
    auto token =
        Send("PUT", "/latest/api/token",
             {{"X-aws-ec2-metadata-token-ttl-seconds", std::string(kImdsTokenTtlSeconds)}});
    if (!token) return token.error();
    const http::Headers auth{{"X-aws-ec2-metadata-token", *token}};
    auto roles = Send("GET", "/latest/meta-data/iam/security-credentials/", auth);
    if (!roles) return roles.error();
    const std::string role = roles->substr(0, roles->find('\n'));
    if (!IsIamRoleName(role)) {
      return MakeError(ErrorCode::kNotFound, "EC2 instance metadata: no instance role");
    }
    auto body = Send("GET", "/latest/meta-data/iam/security-credentials/" + role, auth);
    if (!body) return body.error();
    return ParseJsonCredentials(*body, "EC2 instance metadata");
  }

 private:
  Result<std::string> Send(std::string method, const std::string& path, http::Headers headers) {
    auto response = http_.Send({.method = std::move(method),
                                .url = endpoint_ + path,
                                .headers = std::move(headers),
                                .timeout = kMetadataTimeout,
                                .connect_timeout = kMetadataConnectTimeout});
    if (!response) return response.error();
    if (response->status != 200) {
      return MakeError(response->status == 404 ? ErrorCode::kNotFound : ErrorCode::kUnavailable,
                       "EC2 instance metadata {}: HTTP {}", path.substr(0, path.rfind('/') + 1),
                       response->status);
    }
    return std::move(response->body);
  }

  std::string endpoint_;
  bool disabled_;
  http::HttpClient& http_;
};

}  // namespace

std::optional<WallTime> ParseIso8601(std::string_view text) {
  using namespace std::chrono;
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
  char tail[16] = {};
  // Digits where the digits go: sscanf also skips blanks and takes signs ("2-1-02T\t3:04:2"
  // and "2024-01-02T-1:-1:-1Z" were times; found by fuzzing).
  constexpr std::string_view kShape = "dddd-dd-ddTdd:dd:dd";
  if (text.size() < kShape.size()) return std::nullopt;
  for (std::size_t i = 0; i < kShape.size(); ++i) {
    const bool digit = text[i] >= '0' && text[i] <= '9';
    if (kShape[i] == 'd' ? !digit : text[i] != kShape[i]) return std::nullopt;
  }
  const std::string copy(text.substr(0, 64));
  // sscanf stops at the first mismatch; the checks below reject partial parses.
  const int n =
      std::sscanf(copy.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%15s", &y, &mo, &d, &h, &mi, &s, tail);
  if (n < 6) return std::nullopt;
  std::string_view rest(tail);
  if (rest.starts_with('.')) {
    const auto end = rest.find_first_not_of("0123456789", 1);
    rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end);
  }
  if (!(rest.empty() || rest == "Z" || rest == "+00:00" || rest == "+0000")) return std::nullopt;
  // Within what a WallTime holds (nanoseconds in 64 bits: 1677 to 2262). An Expiration of
  // 9999 (never) overflowed it and read as long past: the credentials were fetched again
  // before every request. Taken as the same far future (or past).
  y = std::clamp(y, 1678, 2261);
  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)},
                           day{static_cast<unsigned>(d)}};
  if (!ymd.ok() || h > 23 || mi > 59 || s > 60) return std::nullopt;
  return WallTime{sys_days{ymd}} + hours{h} + minutes{mi} + seconds{s};
}

std::unique_ptr<CredentialsProvider> MakeEnvironmentProvider(const AwsConfig& config) {
  return std::make_unique<EnvironmentProvider>(config);
}
std::unique_ptr<CredentialsProvider> MakeProfileProvider(const AwsConfig& config) {
  return std::make_unique<ProfileProvider>(config);
}
std::unique_ptr<CredentialsProvider> MakeWebIdentityProvider(const AwsConfig& config,
                                                             std::string sts_endpoint,
                                                             http::HttpClient& http,
                                                             const Clock& clock) {
  return std::make_unique<WebIdentityProvider>(config, std::move(sts_endpoint), http, clock);
}
std::unique_ptr<CredentialsProvider> MakeContainerProvider(const AwsConfig& config,
                                                           http::HttpClient& http) {
  return std::make_unique<ContainerProvider>(config, http);
}
std::unique_ptr<CredentialsProvider> MakeImdsProvider(const AwsConfig& config,
                                                      http::HttpClient& http) {
  return std::make_unique<ImdsProvider>(config, http);
}

CredentialsChain::CredentialsChain(std::vector<std::unique_ptr<CredentialsProvider>> providers,
                                   const Clock& clock, std::unique_ptr<http::HttpClient> owned_http)
    : owned_http_(std::move(owned_http)), providers_(std::move(providers)), clock_(clock) {}

std::string CredentialsChain::source() const {
  std::lock_guard lock(mutex_);
  return source_;
}

void CredentialsChain::Invalidate() {
  std::lock_guard lock(mutex_);
  cached_.reset();
}

bool CredentialsChain::Reject(std::string_view code, std::string_view access_key_id) {
  std::lock_guard lock(mutex_);
  if (!cached_) return true;  // dropped already: the next Get() fetches
  if (cached_->access_key_id != access_key_id) return true;  // others came meanwhile
  if (source_ == "environment") return false;  // read once: asking again changes nothing
  const SteadyTime now = clock_.Steady();
  if (fetched_at_ && now - *fetched_at_ < kRefreshRetry) return false;
  spdlog::warn("aws credentials from the {} provider refused ({}): asking the chain again", source_,
               code);
  cached_.reset();
  return true;
}

void CredentialsChain::SetClockOffset(std::chrono::milliseconds offset) {
  std::lock_guard lock(mutex_);
  clock_offset_ = offset;
}

Result<Credentials> CredentialsChain::Get() {
  std::lock_guard lock(mutex_);
  const WallTime now = clock_.Now() + clock_offset_;  // AWS's time, as the expiration is
  if (cached_ && (!cached_->expiration || now < *cached_->expiration - kRefreshBefore)) {
    return *cached_;
  }
  const bool still_good = cached_ && cached_->expiration && now < *cached_->expiration;
  // After a failed refresh, the cached credentials serve until the next try is due: without
  // the wait, every request of the last minutes before expiry asked again (with STS down, each
  // waited for its timeout, and each logged a warning).
  if (still_good && refresh_failed_at_ && now >= *refresh_failed_at_ &&
      now - *refresh_failed_at_ < kRefreshRetry) {
    return *cached_;
  }
  auto fresh = FetchFromChain();
  if (fresh) {
    cached_ = *fresh;
    fetched_at_ = clock_.Steady();
    refresh_failed_at_.reset();
    // Credentials already due for a refresh (a metadata service handing them out minutes before
    // they expire): the next fetch waits kRefreshRetry too, not the next request (review: 3.5
    // fetches a second from one orchestrator for five minutes).
    if (fresh->expiration && now >= *fresh->expiration - kRefreshBefore) refresh_failed_at_ = now;
    return fresh;
  }
  // A failed refresh keeps using credentials that have not expired yet.
  if (still_good) {
    spdlog::warn(
        "aws credentials: refresh failed, using the cached ones until they expire (next try in "
        "{} s): {}",
        std::chrono::duration_cast<std::chrono::seconds>(kRefreshRetry).count(),
        fresh.error().message);
    refresh_failed_at_ = now;
    return *cached_;
  }
  return fresh.error();
}

Result<Credentials> CredentialsChain::FetchFromChain() {
  std::string tried;
  for (const auto& provider : providers_) {
    auto credentials = provider->Fetch();
    if (credentials) {
      if (source_ != provider->name()) {
        spdlog::info("aws credentials from the {} provider", provider->name());
      }
      source_ = std::string(provider->name());
      return credentials;
    }
    if (credentials.error().code != ErrorCode::kNotFound) {
      return MakeError(credentials.error().code, "aws credentials ({}): {}", provider->name(),
                       credentials.error().message);
    }
    // The provider that gave the credentials in use has none now (a credentials file being
    // rewritten, a token file missing): an error, not the next provider's identity.
    if (source_ == provider->name()) {
      return MakeError(ErrorCode::kUnavailable,
                       "aws credentials ({}): none now, where the ones in use came from ({})",
                       provider->name(), credentials.error().message);
    }
    spdlog::debug("aws credentials: {}", credentials.error().message);
    if (!tried.empty()) tried += ", ";
    tried += provider->name();
  }
  return MakeError(ErrorCode::kNotFound, "no AWS credentials found (tried {})", tried);
}

std::shared_ptr<CredentialsChain> MakeDefaultCredentialsChain(
    const AwsConfig& config, const Clock& clock, std::unique_ptr<http::HttpClient> http) {
  std::vector<std::unique_ptr<CredentialsProvider>> providers;
  providers.push_back(MakeEnvironmentProvider(config));
  providers.push_back(MakeProfileProvider(config));
  auto sts = ResolveEndpoint(config, kSts, ResolveRegion(config));
  // Without a region the SDKs use the global STS endpoint.
  providers.push_back(
      MakeWebIdentityProvider(config, sts ? *sts : "https://sts.amazonaws.com", *http, clock));
  providers.push_back(MakeContainerProvider(config, *http));
  if (!config.ec2_metadata_disabled) providers.push_back(MakeImdsProvider(config, *http));
  return std::make_shared<CredentialsChain>(std::move(providers), clock, std::move(http));
}

Result<void> CheckProfileSupported(const AwsConfig& config) {
  if (!config.access_key_id.empty()) return Ok();  // the environment's keys come first
  std::map<std::string, std::string> settings;     // keys in lower case, as the SDKs read them
  for (const auto& [key, value] : LoadProfile(config)) {
    std::string lower = key;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    settings[lower] = value;
  }
  const bool keys = settings.contains("aws_access_key_id");
  const char* unsupported = nullptr;
  for (const char* key : {"role_arn", "credential_process", "sso_account_id", "sso_role_name"}) {
    if (settings.contains(key)) {
      unsupported = key;
      break;
    }
  }
  if (unsupported == nullptr) return Ok();
  const bool other_source = (!config.web_identity_token_file.empty() && !config.role_arn.empty()) ||
                            !config.container_credentials_relative_uri.empty() ||
                            !config.container_credentials_full_uri.empty();
  if (config.profile.empty() || keys || other_source) {
    spdlog::warn("AWS profile '{}' sets {}, which hsdo does not support: it signs with {}",
                 ProfileName(config), unsupported,
                 keys ? "the profile's keys" : "the next source of credentials of the chain");
    return Ok();
  }
  return MakeError(ErrorCode::kInvalidArgument,
                   "AWS profile '{}' (AWS_PROFILE, read from AWS_CONFIG_FILE and "
                   "AWS_SHARED_CREDENTIALS_FILE) sets {} and no keys, which hsdo does not "
                   "support: its requests would be signed as another identity. Give the profile "
                   "aws_access_key_id and aws_secret_access_key (or set AWS_ACCESS_KEY_ID and "
                   "AWS_SECRET_ACCESS_KEY), or use AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE, "
                   "or unset AWS_PROFILE to use the instance's role",
                   ProfileName(config), unsupported);
}

}  // namespace hsdo::aws
