#include "common/secret_file.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/logging.h"

namespace hsdo {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

bool MayShowSecretPath(const std::string& path) {
  if (access(path.c_str(), F_OK) == 0) return true;
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return false;
  const std::string directory = slash == 0 ? "/" : path.substr(0, slash);
  struct stat st {};
  return stat(directory.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

Result<std::string> ReadSecretFile(const std::string& path, std::string_view variable) {
  const std::string where =
      MayShowSecretPath(path)
          ? fmt::format("{}=\"{}\"", variable, logging::EscapeControlCharacters(path))
          : fmt::format(
                "{} (its value is not shown: neither a file nor a directory of that "
                "path exists, and it may be the secret itself, where the file's path "
                "belongs)",
                variable);
  // O_NONBLOCK: opening a FIFO for reading would wait for a writer.
  const Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (fd.get() < 0) {
    // Not there (yet): a template renders it after hsdo starts, or is rewriting it.
    const int error = errno;
    return MakeError(error == ENOENT ? ErrorCode::kNotFound : ErrorCode::kInvalidArgument,
                     "{}: cannot open it: {}", where, std::strerror(error));
  }
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) {
    return MakeError(ErrorCode::kInvalidArgument, "{}: cannot stat it: {}", where,
                     std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return MakeError(ErrorCode::kInvalidArgument, "{}: not a regular file", where);
  }
  std::string text;
  char buffer[4096];
  while (true) {
    const ssize_t got = read(fd.get(), buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      return MakeError(ErrorCode::kInvalidArgument, "{}: cannot read it: {}", where,
                       std::strerror(errno));
    }
    if (got == 0) break;
    text.append(buffer, static_cast<std::size_t>(got));
    if (text.size() > kMaxSecretFileBytes) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "{}: larger than {} bytes, not a file holding one secret", where,
                       kMaxSecretFileBytes);
    }
  }
  // An editor's UTF-8 byte order mark would go out with the secret (a refusal without a hint).
  constexpr std::string_view kBom = "\xEF\xBB\xBF";
  if (text.starts_with(kBom)) text.erase(0, kBom.size());
  const auto first = std::find_if_not(text.begin(), text.end(), IsSpace);
  const auto last = std::find_if_not(text.rbegin(), text.rend(), IsSpace).base();
  std::string secret = first < last ? std::string(first, last) : std::string();
  if (secret.empty()) {  // being written, perhaps: as if it were not there yet
    return MakeError(ErrorCode::kNotFound, "{}: the file is empty", where);
  }
  if (std::any_of(secret.begin(), secret.end(), [](char c) {
        const auto byte = static_cast<unsigned char>(c);
        return byte < 0x20 || byte == 0x7f;
      })) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "{}: holds a control character (CR, LF, tab, ...) inside its value "
                     "(not shown)",
                     where);
  }
  return secret;
}

}  // namespace hsdo
