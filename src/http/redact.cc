#include "http/redact.h"

#include <algorithm>

namespace hsdo::http {

namespace {

constexpr std::string_view kRedacted = "<redacted>";
constexpr std::size_t kMinSecret = 4;

}  // namespace

std::string RedactSecrets(std::string_view text, std::span<const std::string> secrets) {
  std::string out(text);
  for (const auto& secret : secrets) {
    if (secret.size() < kMinSecret) continue;
    for (auto pos = out.find(secret); pos != std::string::npos; pos = out.find(secret, pos)) {
      out.replace(pos, secret.size(), kRedacted);
      pos += kRedacted.size();
    }
  }
  if (out.size() > kMaxRedactedText) out = out.substr(0, kMaxRedactedText) + "...";
  std::replace_if(
      out.begin(), out.end(),
      [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == '\x7f'; }, ' ');
  return out;
}

std::string UrlForMessages(std::string_view url) {
  url = url.substr(0, url.find_first_of("?#"));
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::string(url);
  const std::size_t host_start = scheme_end + 3;
  const std::size_t authority_end = std::min(url.find('/', host_start), url.size());
  // The last '@' of the authority: a password may hold another.
  const auto at = url.substr(0, authority_end).rfind('@');
  if (at == std::string_view::npos || at < host_start) return std::string(url);
  return std::string(url.substr(0, host_start)) + std::string(url.substr(at + 1));
}

}  // namespace hsdo::http
