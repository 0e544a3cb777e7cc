#include "aws/sigv4.h"

#include <nettle/hmac.h>
#include <nettle/sha2.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/shared_library.h"
#include "http/http_client.h"

namespace hsdo::aws {

namespace {

constexpr std::string_view kAlgorithm = "AWS4-HMAC-SHA256";

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Trims the value and collapses every run of whitespace (folded lines included) to one space.
std::string CanonicalHeaderValue(std::string_view value) {
  std::string out;
  bool pending_space = false;
  for (const char c : value) {
    if (IsSpace(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(c);
  }
  return out;
}

bool HasHeader(const http::Headers& headers, std::string_view lower_name) {
  return std::any_of(headers.begin(), headers.end(),
                     [&](const auto& h) { return ToLower(h.first) == lower_name; });
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string HexEncode(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char ch : bytes) {
    const auto c = static_cast<unsigned char>(ch);
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 0xF]);
  }
  return out;
}

namespace {

// SHA-256 and HMAC-SHA256 come from Nettle, loaded on the first signature as libcurl is
// (src/http): an agent on SQLite never signs anything and so never maps it. Nettle rather than
// libcrypto: libcurl (the GnuTLS build, src/http) already maps Nettle, and OpenSSL 3's first
// use initialises its providers, about 3 MB resident for two hash functions.
struct CryptoLibrary {
  decltype(&nettle_sha256_init) hash_start = nullptr;
  decltype(&nettle_sha256_update) hash_add = nullptr;
  decltype(&nettle_sha256_digest) hash_end = nullptr;
  decltype(&nettle_hmac_sha256_set_key) mac_key = nullptr;
  decltype(&nettle_hmac_sha256_update) mac_add = nullptr;
  decltype(&nettle_hmac_sha256_digest) mac_end = nullptr;
};

const CryptoLibrary* Crypto() {
  static CryptoLibrary library;
  static std::once_flag once;
  std::call_once(once, [] {
    SharedLibrary nettle("libnettle.so.8");
    CryptoLibrary loaded;
    nettle.Bind(loaded.hash_start, "nettle_sha256_init");
    nettle.Bind(loaded.hash_add, "nettle_sha256_update");
    nettle.Bind(loaded.hash_end, "nettle_sha256_digest");
    nettle.Bind(loaded.mac_key, "nettle_hmac_sha256_set_key");
    nettle.Bind(loaded.mac_add, "nettle_hmac_sha256_update");
    nettle.Bind(loaded.mac_end, "nettle_hmac_sha256_digest");
    if (!nettle.error().empty()) {
      spdlog::error("cannot load libnettle: {}; AWS requests cannot be signed", nettle.error());
      return;
    }
    library = loaded;
  });
  return library.mac_end != nullptr ? &library : nullptr;
}

const std::uint8_t* Bytes(std::string_view data) {
  return reinterpret_cast<const std::uint8_t*>(data.data());
}

}  // namespace

// Without Nettle both return "" (logged once): the request then goes out with a wrong
// signature and AWS refuses it, an error like any other.
std::string Sha256Hex(std::string_view data) {
  const CryptoLibrary* crypto = Crypto();
  if (crypto == nullptr) return {};
  sha256_ctx context;
  crypto->hash_start(&context);
  crypto->hash_add(&context, data.size(), Bytes(data));
  std::uint8_t digest[SHA256_DIGEST_SIZE];
  crypto->hash_end(&context, sizeof digest, digest);
  return HexEncode(std::string_view(reinterpret_cast<const char*>(digest), sizeof digest));
}

std::string HmacSha256(std::string_view key, std::string_view data) {
  const CryptoLibrary* crypto = Crypto();
  if (crypto == nullptr) return {};
  hmac_sha256_ctx context;
  crypto->mac_key(&context, key.size(), Bytes(key));
  crypto->mac_add(&context, data.size(), Bytes(data));
  std::uint8_t digest[SHA256_DIGEST_SIZE];
  crypto->mac_end(&context, sizeof digest, digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof digest);
}

std::string FormatAmzDate(WallTime time) {
  using namespace std::chrono;
  const auto secs = time_point_cast<seconds>(time);
  const auto day = floor<days>(secs);
  const year_month_day ymd{day};
  const hh_mm_ss hms{secs - day};
  return fmt::format("{:04}{:02}{:02}T{:02}{:02}{:02}Z", static_cast<int>(ymd.year()),
                     static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                     hms.hours().count(), hms.minutes().count(), hms.seconds().count());
}

std::string PercentDecode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      const int hi = HexValue(text[i + 1]);
      const int lo = HexValue(text[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(text[i]);
  }
  return out;
}

std::string CanonicalPath(std::string_view path, bool normalize) {
  if (path.empty()) return "/";
  if (!normalize) return http::UrlEncode(path, /*keep_slash=*/true);
  // RFC 3986 dot-segment removal; empty segments go too (SigV4 normalisation, not S3's).
  std::vector<std::string_view> segments;
  std::size_t start = 0;
  while (start <= path.size()) {
    const std::size_t slash = path.find('/', start);
    const std::size_t end = slash == std::string_view::npos ? path.size() : slash;
    const std::string_view segment = path.substr(start, end - start);
    if (segment == "..") {
      if (!segments.empty()) segments.pop_back();
    } else if (!segment.empty() && segment != ".") {
      segments.push_back(segment);
    }
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  const std::string_view last = path.substr(path.rfind('/') + 1);
  const bool trailing_slash = path.back() == '/' || last == "." || last == "..";
  std::string out;
  for (const auto segment : segments) {
    out += '/';
    out += http::UrlEncode(segment);
  }
  if (out.empty() || trailing_slash) out += '/';
  return out;
}

std::string CanonicalQuery(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> params;
  std::size_t start = 0;
  while (start < query.size()) {
    std::size_t amp = query.find('&', start);
    if (amp == std::string_view::npos) amp = query.size();
    const std::string_view param = query.substr(start, amp - start);
    if (!param.empty()) {
      const std::size_t eq = param.find('=');
      const std::string_view key = param.substr(0, eq);
      const std::string_view value =
          eq == std::string_view::npos ? std::string_view{} : param.substr(eq + 1);
      params.emplace_back(http::UrlEncode(PercentDecode(key)),
                          http::UrlEncode(PercentDecode(value)));
    }
    start = amp + 1;
  }
  std::sort(params.begin(), params.end());
  std::string out;
  for (const auto& [key, value] : params) {
    if (!out.empty()) out += '&';
    out += key;
    out += '=';
    out += value;
  }
  return out;
}

Signature ComputeSignature(SigningRequest& request, const Credentials& credentials,
                           const SigningParams& params) {
  Signature result;
  result.amz_date = FormatAmzDate(params.time);
  const std::string date = result.amz_date.substr(0, 8);
  const std::string payload_hash = Sha256Hex(request.body);

  if (!HasHeader(request.headers, "x-amz-date")) {
    request.headers.emplace_back("X-Amz-Date", result.amz_date);
  }
  if (params.sign_body && !HasHeader(request.headers, "x-amz-content-sha256")) {
    request.headers.emplace_back("x-amz-content-sha256", payload_hash);
  }
  const bool add_token_after = params.omit_session_token;
  if (!credentials.session_token.empty() && !add_token_after &&
      !HasHeader(request.headers, "x-amz-security-token")) {
    request.headers.emplace_back("X-Amz-Security-Token", credentials.session_token);
  }

  // Lower-cased names in sorted order; repeated headers join with ',' in the order given.
  std::map<std::string, std::string> canonical_headers;
  for (const auto& [name, value] : request.headers) {
    auto [it, inserted] = canonical_headers.try_emplace(ToLower(name), CanonicalHeaderValue(value));
    if (!inserted) {
      it->second += ',';
      it->second += CanonicalHeaderValue(value);
    }
  }
  std::string header_block;
  for (const auto& [name, value] : canonical_headers) {
    header_block += name + ':' + value + '\n';
    if (!result.signed_headers.empty()) result.signed_headers += ';';
    result.signed_headers += name;
  }

  result.canonical_request = fmt::format(
      "{}\n{}\n{}\n{}\n{}\n{}", request.method, CanonicalPath(request.path, params.normalize_path),
      CanonicalQuery(request.query), header_block, result.signed_headers, payload_hash);

  const std::string scope =
      fmt::format("{}/{}/{}/aws4_request", date, params.region, params.service);
  result.string_to_sign = fmt::format("{}\n{}\n{}\n{}", kAlgorithm, result.amz_date, scope,
                                      Sha256Hex(result.canonical_request));

  const std::string k_date = HmacSha256("AWS4" + credentials.secret_access_key, date);
  const std::string k_region = HmacSha256(k_date, params.region);
  const std::string k_service = HmacSha256(k_region, params.service);
  const std::string k_signing = HmacSha256(k_service, "aws4_request");
  result.signature = HexEncode(HmacSha256(k_signing, result.string_to_sign));
  result.authorization =
      fmt::format("{} Credential={}/{}, SignedHeaders={}, Signature={}", kAlgorithm,
                  credentials.access_key_id, scope, result.signed_headers, result.signature);

  if (!credentials.session_token.empty() && add_token_after) {
    request.headers.emplace_back("X-Amz-Security-Token", credentials.session_token);
  }
  return result;
}

std::optional<UrlParts> ParseUrl(std::string_view url) {
  UrlParts parts;
  const std::size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::nullopt;
  parts.scheme = ToLower(url.substr(0, scheme_end));
  std::string_view rest = url.substr(scheme_end + 3);
  const std::size_t path_start = rest.find_first_of("/?");
  parts.host = std::string(rest.substr(0, path_start));
  if (parts.host.empty() || parts.host.find('@') != std::string::npos) return std::nullopt;
  rest = path_start == std::string_view::npos ? std::string_view{} : rest.substr(path_start);
  const std::size_t q = rest.find('?');
  const std::string_view path = rest.substr(0, q);
  parts.path = path.empty() ? "/" : std::string(path);
  if (q != std::string_view::npos) parts.query = std::string(rest.substr(q + 1));
  if (parts.host.front() == '[') {
    const std::size_t close = parts.host.find(']');
    if (close == std::string::npos) return std::nullopt;
    parts.hostname = parts.host.substr(1, close - 1);
  } else {
    parts.hostname = parts.host.substr(0, parts.host.find(':'));
  }
  parts.hostname = ToLower(parts.hostname);
  return parts;
}

void SignRequest(http::Request& request, const Credentials& credentials,
                 const SigningParams& params) {
  const auto url = ParseUrl(request.url);
  SigningRequest signing{.method = request.method,
                         // As the SDKs do for every service but S3: the path as sent is
                         // encoded once more (double encoding).
                         .path = url ? url->path : "/",
                         .query = url ? url->query : "",
                         .headers = {},
                         .body = request.body};
  // Only the headers set here are signed; curl's own (Accept, Content-Length) are not.
  std::erase_if(request.headers, [](const auto& h) {
    const std::string lower = ToLower(h.first);
    return lower == "host" || lower == "authorization" || lower == "x-amz-date" ||
           lower == "x-amz-security-token";
  });
  if (url) signing.headers.emplace_back("Host", url->host);
  for (const auto& header : request.headers) signing.headers.push_back(header);
  const Signature signature = ComputeSignature(signing, credentials, params);
  request.headers = std::move(signing.headers);
  request.headers.emplace_back("Authorization", signature.authorization);
}

}  // namespace hsdo::aws
