// The one redaction path for every HTTP client (AWS, Consul, etcd): whatever a server sends
// back may echo a secret of ours (a token, a signature), and error messages end up in logs.
// Every client passes the text of an error (a body excerpt, a transport message) through
// RedactSecrets with the secrets of the request before it becomes an Error or a log line.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

namespace hsdo::http {

// The longest text RedactSecrets returns (longer text is cut and ends in "...").
inline constexpr std::size_t kMaxRedactedText = 300;

// `text` with every occurrence of each secret replaced by "<redacted>" (secrets shorter than
// 4 characters are ignored: too short to be worth searching for, and they would mangle the
// text), cut to kMaxRedactedText, and on one line (CR, LF and other control characters
// become spaces, so that a server cannot inject log lines). Secrets are removed before the
// text is cut, so no prefix of a secret survives at the cut either.
std::string RedactSecrets(std::string_view text, std::span<const std::string> secrets);

// `url` as an error may show it: without its query and fragment, where a credential may be
// ("http://host/path?token=x" -> "http://host/path"); a URL with an '@' anywhere, which may
// be user info, shows only its scheme ("http://<hidden: the URL has user info>").
std::string UrlForMessages(std::string_view url);

}  // namespace hsdo::http
