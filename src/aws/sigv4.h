// AWS Signature Version 4 (header signing). Pure functions over plain data, so the whole
// algorithm is checked against the published test suite (sigv4_test.cc); SignRequest is the
// small adapter that signs an http::Request in place.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "http/http_client.h"

namespace hsdo::aws {

struct Credentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;           // empty for long-term keys
  std::optional<WallTime> expiration;  // set for temporary credentials
};

// What the signer sees of a request. `path` and `query` are as sent on the wire (before
// canonical encoding); header names keep their case here and are lower-cased when signed.
struct SigningRequest {
  std::string method;
  std::string path = "/";
  std::string query;  // without '?'
  http::Headers headers;
  std::string_view body;
};

struct SigningParams {
  std::string region;
  std::string service;  // the signing name: "dynamodb", "autoscaling", "ec2", "sts"
  WallTime time;
  // Remove "." / ".." segments and empty segments from the path. Every service but S3
  // does this; hsdo's services only ever use "/" anyway.
  bool normalize_path = true;
  bool sign_body = false;           // add and sign x-amz-content-sha256
  bool omit_session_token = false;  // add the token after signing (a few services need it)
};

struct Signature {
  std::string canonical_request;
  std::string string_to_sign;
  std::string signature;      // hex
  std::string authorization;  // the Authorization header value
  std::string amz_date;       // YYYYMMDD'T'HHMMSS'Z'
  std::string signed_headers;
};

// The signing key: HMAC("AWS4" + secret, date) chained over region, service and
// "aws4_request". `date` is YYYYMMDD.
std::string DeriveSigningKey(std::string_view secret, std::string_view date,
                             std::string_view region, std::string_view service);

// The signing key changes only with the secret, the day, the region and the service: a client
// that signs every second derives it once a day instead of four HMACs per request.
// Not thread-safe: one per AwsClient (which is itself one per thread).
class SigningKeyCache {
 public:
  const std::string& Get(std::string_view secret, std::string_view date, std::string_view region,
                         std::string_view service);

 private:
  std::string secret_, date_, region_, service_, key_;
};

// Adds X-Amz-Date (and x-amz-security-token / x-amz-content-sha256 as the params say) to
// `request.headers`, then computes the signature over them. `keys`, when given, keeps the
// signing key between calls.
Signature ComputeSignature(SigningRequest& request, const Credentials& credentials,
                           const SigningParams& params, SigningKeyCache* keys = nullptr);

// Signs an outgoing request in place: sets Host (so that what curl sends is what was
// signed), X-Amz-Date, X-Amz-Security-Token and Authorization.
void SignRequest(http::Request& request, const Credentials& credentials,
                 const SigningParams& params, SigningKeyCache* keys = nullptr);

// Building blocks, exposed for tests.
std::string Sha256Hex(std::string_view data);
std::string HmacSha256(std::string_view key, std::string_view data);  // raw bytes
std::string HexEncode(std::string_view bytes);
std::string FormatAmzDate(WallTime time);
std::string CanonicalPath(std::string_view path, bool normalize);
std::string CanonicalQuery(std::string_view query);
std::string PercentDecode(std::string_view text);

// Splits "scheme://host[:port]/path?query" (for signing and for endpoint checks).
struct UrlParts {
  std::string scheme;
  std::string host;      // host[:port] as it appears in the URL (the Host header)
  std::string hostname;  // without port or IPv6 brackets
  std::string path = "/";
  std::string query;
};
std::optional<UrlParts> ParseUrl(std::string_view url);

}  // namespace hsdo::aws
