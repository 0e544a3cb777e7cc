// A secret kept in a file (CONSUL_HTTP_TOKEN_FILE), read at each use: a secret rotated in the
// file (a Vault or Consul agent's template, a Kubernetes secret's symlink swap) is used at the
// next request, without a restart.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace hsdo {

// The content of the file at `path` (symbolic links followed), surrounding whitespace and a
// UTF-8 byte order mark trimmed. An error that names `variable` and the path (unless the path
// may be the secret itself: no '/' and no such file), never the content: kNotFound when the
// file does not exist or is empty (not written yet: worth trying again later); otherwise
// kInvalidArgument: it cannot be opened, is not a regular file (a FIFO would block the
// reader), is larger than kMaxSecretFileBytes, or holds a control character (the secret goes
// into a header: a CR or LF there would add one).
Result<std::string> ReadSecretFile(const std::string& path, std::string_view variable);

inline constexpr std::size_t kMaxSecretFileBytes = 64 * 1024;

// Whether `path`, the value of a secret's _FILE variable, may be shown (in an error, `hsdo
// config`): a file of that name exists, or it has a '/' and its directory exists. Otherwise it
// may be the secret itself, put where its file's path belongs (review: a token, or a base64
// password with '/' in it, was printed).
bool MayShowSecretPath(const std::string& path);

}  // namespace hsdo
