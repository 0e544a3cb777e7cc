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
  // Any '@' may end user info, whose password may itself hold '?', '#', '/' or '@' (review:
  // cutting the query first showed "http://u:ab" of "http://u:ab?cd@host/"): with one, only
  // the scheme is shown.
  if (const auto at = url.find('@'); at != std::string_view::npos) {
    // A scheme before the first '@' only: "u:pw@host/?next=http://y" has none.
    const auto scheme_end = url.find("://");
    return (scheme_end < at ? std::string(url.substr(0, scheme_end + 3)) : std::string()) +
           "<hidden: the URL has user info>";
  }
  return std::string(url.substr(0, url.find_first_of("?#")));
}

}  // namespace hsdo::http
