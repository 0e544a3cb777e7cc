#include "haproxy/runtime_api.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>

#include "common/validate.h"

namespace hsdo::haproxy {
namespace {

using Millis = std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

// Closes a file descriptor when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string Errno(int err) { return std::strerror(err); }

Result<std::uint16_t> ParsePort(std::string_view text) {
  unsigned value = 0;
  const auto* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end || value < 1 || value > 65535) {
    return MakeError(ErrorCode::kInvalidArgument, "invalid port '{}'", text);
  }
  return static_cast<std::uint16_t>(value);
}

int PollTimeoutMs(SteadyClock::time_point deadline) {
  const auto left = std::chrono::duration_cast<Millis>(deadline - SteadyClock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(left);
}

// Connects without blocking longer than `timeout`. Returns the connected, non-blocking socket.
Result<int> Connect(const SocketEndpoint& endpoint, Millis timeout) {
  sockaddr_storage storage{};
  socklen_t length = 0;
  int family = AF_UNIX;
  switch (endpoint.kind) {
    case SocketEndpoint::Kind::kUnix: {
      auto* addr = reinterpret_cast<sockaddr_un*>(&storage);
      if (endpoint.path.size() >= sizeof(addr->sun_path)) {
        return MakeError(ErrorCode::kInvalidArgument, "socket path too long ({} bytes): {}",
                         endpoint.path.size(), endpoint.path);
      }
      addr->sun_family = AF_UNIX;
      std::memcpy(addr->sun_path, endpoint.path.c_str(), endpoint.path.size() + 1);
      length = sizeof(sockaddr_un);
      break;
    }
    case SocketEndpoint::Kind::kIpv4: {
      auto* addr = reinterpret_cast<sockaddr_in*>(&storage);
      addr->sin_family = AF_INET;
      addr->sin_port = htons(endpoint.port);
      if (inet_pton(AF_INET, endpoint.host.c_str(), &addr->sin_addr) != 1) {
        return MakeError(ErrorCode::kInvalidArgument, "invalid IPv4 address '{}'", endpoint.host);
      }
      family = AF_INET;
      length = sizeof(sockaddr_in);
      break;
    }
    case SocketEndpoint::Kind::kIpv6: {
      auto* addr = reinterpret_cast<sockaddr_in6*>(&storage);
      addr->sin6_family = AF_INET6;
      addr->sin6_port = htons(endpoint.port);
      if (inet_pton(AF_INET6, endpoint.host.c_str(), &addr->sin6_addr) != 1) {
        return MakeError(ErrorCode::kInvalidArgument, "invalid IPv6 address '{}'", endpoint.host);
      }
      family = AF_INET6;
      length = sizeof(sockaddr_in6);
      break;
    }
  }
  const int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return MakeError(ErrorCode::kUnavailable, "socket(): {}", Errno(errno));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&storage), length) == 0) return fd;
  if (errno != EINPROGRESS && errno != EAGAIN) {
    const int err = errno;
    ::close(fd);
    // Not HAProxy being down: the socket file's mode keeps this user out, for as long as
    // haproxy.cfg says so. The message says what to change (it is logged and shown by /readyz).
    return MakeError(ErrorCode::kUnavailable, "connect to {}: {}{}", endpoint.ToString(),
                     Errno(err),
                     err == EACCES ? " (this user may not use the socket: declare it in "
                                     "haproxy.cfg with `mode 660 group haproxy` and run the agent "
                                     "in that group, as the packaged unit does)"
                                   : "");
  }
  pollfd pfd{.fd = fd, .events = POLLOUT, .revents = 0};
  const int ready = ::poll(&pfd, 1, static_cast<int>(timeout.count()));
  int err = 0;
  socklen_t err_length = sizeof(err);
  if (ready <= 0) {
    err = ready == 0 ? ETIMEDOUT : errno;
  } else if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_length) != 0) {
    err = errno;
  }
  if (err != 0) {
    ::close(fd);
    return MakeError(ErrorCode::kUnavailable, "connect to {}: {}", endpoint.ToString(), Errno(err));
  }
  return fd;
}

// Builds a batch: `prompt` on a new connection, one command per line, and `quit` unless the
// connection is kept. Not `;`-joined: HAProxy 3.2 prompts only after the last command of a
// line (the others' replies end with a bare empty line), so replies could no longer be told
// apart, and an agent waiting for a prompt per command never got past its first batch.
std::string BuildRequest(const std::vector<std::string>& commands, bool prompt, bool quit) {
  std::string request = prompt ? "prompt\n" : "";
  std::size_t size = request.size() + (quit ? 5 : 0);
  for (const auto& command : commands) size += command.size() + 1;
  request.reserve(size);
  for (const auto& command : commands) {
    request += command;
    request += '\n';
  }
  if (quit) request += "quit\n";
  return request;
}

// The end of every reply in prompt mode: an empty line and the prompt.
constexpr std::string_view kPromptEnd = "\n> ";
constexpr std::size_t kCommandsInFlight = 100;
// While more than kNapAbove replies of a batch are still to come, the client naps between two
// reads instead of waiting in poll() for each reply. HAProxy answers a full apply's commands
// about 11 us apart, each in a send of its own: a client asleep in poll() is woken for every
// one of them, and the wake-up is paid by HAProxy's send (the kernel's
// `_raw_spin_unlock_irqrestore`, 12 % of HAProxy's samples in a full apply of 2 x 1000 slots),
// then by the client, which wakes, reads a few bytes and sends the next line. Napping lets
// replies gather: the full apply took 95 ms and 34 ms of the agent's CPU, 80 ms and 17 ms
// with naps of 50-150 us (docs/benchmarks.md, "Check, 2026-12-05 (nineteenth session)"). The
// last kNapAbove replies are read as they come, so a batch's end is not delayed, and a batch
// of a few commands (the steady cycle's `show info`, a full read) never naps.
constexpr auto kBatchNap = std::chrono::microseconds(75);
constexpr std::size_t kNapAbove = 16;

// The most one reply is read: HAProxy's largest, a `show servers state` or `show stat` of one
// backend, is about 115 and 270 bytes per server (measured on 2.6.12), 27 MB for 100,000 slots
// (HAPROXY_BACKEND_SERVERS_LIST_SIZE's largest). Found in review: a HAPROXY_SOCKET_PATH naming
// a peer that sends without end took the agent to 2 GB in 5 s, and SIGTERM did not stop it.
// (A cap on the whole batch, the first version, failed full reads of several large backends.)
constexpr std::size_t kMaxReplyBytes = std::size_t{64} << 20;

// Whether `output` holds a prompt of the master CLI: "master> ", or with the flags it shows
// after a failed reload or in expert mode ("master[ReloadFailed](e)> "; a timed prompt puts
// "[d:hh:mm:ss] " before it).
bool HasMasterPrompt(std::string_view output) {
  constexpr std::string_view kMaster = "master";
  for (auto at = output.find(kMaster); at != std::string_view::npos;
       at = output.find(kMaster, at + 1)) {
    const std::string_view rest = output.substr(at + kMaster.size(), 40);
    const auto end = rest.find("> ");
    if (end != std::string_view::npos &&
        std::all_of(rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(end), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '[' || c == ']' || c == '(' ||
                 c == ')';
        })) {
      return true;
    }
  }
  return false;
}

}  // namespace

Result<SocketEndpoint> SocketEndpoint::Parse(std::string_view text) {
  SocketEndpoint endpoint;
  auto host_port = [&](std::string_view rest, bool v6) -> Result<SocketEndpoint> {
    std::string_view host;
    std::string_view port;
    if (v6) {
      const auto close = rest.find(']');
      if (rest.empty() || rest.front() != '[' || close == std::string_view::npos ||
          close + 1 >= rest.size() || rest[close + 1] != ':') {
        return MakeError(ErrorCode::kInvalidArgument,
                         "invalid socket address '{}': expected ipv6@[address]:port", text);
      }
      host = rest.substr(1, close - 1);
      port = rest.substr(close + 2);
    } else {
      const auto colon = rest.rfind(':');
      if (colon == std::string_view::npos) {
        return MakeError(ErrorCode::kInvalidArgument,
                         "invalid socket address '{}': expected ipv4@address:port", text);
      }
      host = rest.substr(0, colon);
      port = rest.substr(colon + 1);
    }
    auto canonical = CanonicalIp(host);
    if (!canonical || IsIpv6(*canonical) != v6) {
      return MakeError(ErrorCode::kInvalidArgument, "invalid socket address '{}': bad {} literal",
                       text, v6 ? "IPv6" : "IPv4");
    }
    auto parsed_port = ParsePort(port);
    if (!parsed_port) {
      return MakeError(ErrorCode::kInvalidArgument, "invalid socket address '{}': {}", text,
                       parsed_port.error().message);
    }
    endpoint.kind = v6 ? Kind::kIpv6 : Kind::kIpv4;
    endpoint.host = *canonical;
    endpoint.port = *parsed_port;
    return endpoint;
  };
  if (text.starts_with("ipv4@")) return host_port(text.substr(5), false);
  if (text.starts_with("ipv6@")) return host_port(text.substr(5), true);
  if (text.starts_with("unix@")) text.remove_prefix(5);
  if (text.empty()) return MakeError(ErrorCode::kInvalidArgument, "empty socket path");
  endpoint.kind = Kind::kUnix;
  endpoint.path = std::string(text);
  return endpoint;
}

std::string SocketEndpoint::ToString() const {
  switch (kind) {
    case Kind::kUnix:
      return path;
    case Kind::kIpv4:
      return fmt::format("ipv4@{}:{}", host, port);
    case Kind::kIpv6:
      return fmt::format("ipv6@[{}]:{}", host, port);
  }
  return path;
}

SocketRuntimeApi::SocketRuntimeApi(SocketEndpoint endpoint, SocketRuntimeApiOptions options)
    : endpoint_(std::move(endpoint)), options_(options) {}

bool IsPermissionDenied(std::string_view reply) {
  return reply.find("Permission denied") != std::string_view::npos;
}

Result<std::unique_ptr<SocketRuntimeApi>> SocketRuntimeApi::Create(
    std::string_view endpoint, SocketRuntimeApiOptions options) {
  auto parsed = SocketEndpoint::Parse(endpoint);
  if (!parsed) return parsed.error();
  return std::make_unique<SocketRuntimeApi>(std::move(*parsed), options);
}

SocketRuntimeApi::~SocketRuntimeApi() { Reset(); }

void SocketRuntimeApi::Reset() {
  if (kept_fd_ >= 0) ::close(kept_fd_);
  kept_fd_ = -1;
}

bool SocketRuntimeApi::ProcessMayRun(std::string_view pid) const {
  if (endpoint_.kind != SocketEndpoint::Kind::kUnix) return false;
  int number = 0;
  const auto [end, ec] = std::from_chars(pid.data(), pid.data() + pid.size(), number);
  if (ec != std::errc() || end != pid.data() + pid.size() || number <= 1) return false;
  if (::kill(number, 0) != 0 && errno != EPERM) return false;
  // /proc/PID/stat: "PID (NAME) STATE ...". The pid may be another program's (reused since, or
  // HAProxy's in another PID namespace). An ended process its parent has not reaped (a zombie:
  // a container whose entrypoint is a shell, a wrapper that never waits) keeps its pid and
  // name, and serves nothing (found in a chaos soak: every drain on that node was then held
  // until its timeout, for good). Unreadable (another namespace's /proc): it may run.
  std::ifstream stat(fmt::format("/proc/{}/stat", number));
  std::string line;
  if (!std::getline(stat, line)) return true;
  const auto open = line.find('(');
  const auto close = line.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open ||
      close + 2 >= line.size()) {
    return true;
  }
  const char state = line[close + 2];
  return line.compare(open + 1, close - open - 1, "haproxy") == 0 && state != 'Z' && state != 'X';
}

std::optional<std::vector<std::string>> ParseReplacedPids(std::span<const std::string> arguments) {
  std::vector<std::string> pids;
  bool in_list = false;
  for (const auto& argument : arguments) {
    if (argument == "-sf" || argument == "-st") {
      in_list = true;
      continue;
    }
    const bool number = !argument.empty() && argument.size() <= 10 &&
                        argument.find_first_not_of("0123456789") == std::string::npos;
    if (in_list && number) {
      pids.push_back(argument);
    } else {
      in_list = false;
    }
  }
  // Listeners taken over (-x) from a process that no -sf or -st names: stopped by a signal of
  // its own (a wrapper's). Which one, this cannot tell.
  if (pids.empty() && std::find(arguments.begin(), arguments.end(), "-x") != arguments.end()) {
    return std::nullopt;
  }
  return pids;
}

std::optional<std::vector<std::string>> SocketRuntimeApi::ReplacedAtStart(
    std::string_view pid) const {
  if (endpoint_.kind != SocketEndpoint::Kind::kUnix) return std::nullopt;
  std::ifstream file(fmt::format("/proc/{}/cmdline", pid), std::ios::binary);
  std::vector<std::string> arguments;
  for (std::string argument; std::getline(file, argument, '\0');) arguments.push_back(argument);
  if (arguments.empty()) return std::nullopt;  // gone, or hidden from this user
  return ParseReplacedPids(arguments);
}

// A kept connection is usable while HAProxy has neither closed it nor sent anything unasked.
bool SocketRuntimeApi::KeptConnectionAlive() const {
  char byte = 0;
  const ssize_t n = ::recv(kept_fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

Result<std::vector<std::string>> SocketRuntimeApi::Execute(
    const std::vector<std::string>& commands) {
  if (commands.empty()) return std::vector<std::string>{};
  for (const auto& command : commands) {
    // A separator or line break inside one command would make HAProxy run something else
    // than what the caller validated.
    if (command.find_first_of(";\n\r\\") != std::string::npos) {
      return MakeError(ErrorCode::kInvalidArgument, "refusing command with a separator: '{}'",
                       command);
    }
  }
  if (kept_fd_ >= 0 && !KeptConnectionAlive()) Reset();
  const bool reused = kept_fd_ >= 0;
  bool closed_unanswered = false;
  auto replies = Exchange(commands, &closed_unanswered);
  if (!replies) {
    Reset();
    // HAProxy closed the kept connection before it read the batch (an idle timeout as it was
    // sent): nothing ran, so the batch goes again, once, on a new connection.
    if (reused && closed_unanswered) {
      replies = Exchange(commands, &closed_unanswered);
      if (!replies) Reset();
    }
  }
  return replies;
}

Result<std::vector<std::string>> SocketRuntimeApi::Exchange(
    const std::vector<std::string>& commands, bool* closed_unanswered) {
  *closed_unanswered = false;
  const bool fresh = kept_fd_ < 0;
  std::optional<Fd> per_batch;  // closes a connection that is not kept
  if (fresh) {
    auto connected = Connect(endpoint_, options_.connect_timeout);
    if (!connected) return connected.error();
    ++connections_;
    if (options_.keep_open) {
      kept_fd_ = *connected;
    } else {
      per_batch.emplace(*connected);
    }
  }
  const int fd = options_.keep_open ? kept_fd_ : per_batch->get();
  const std::string request = BuildRequest(commands, fresh, !options_.keep_open);
  // A kept connection ends the batch at its last prompt (a new one also answers `prompt`);
  // otherwise HAProxy closes the connection after `quit`.
  const std::size_t prompts_expected = commands.size() + (fresh ? 1 : 0);
  std::size_t prompts = 0;
  std::size_t scanned = 0;
  std::size_t reply_start = 0;  // where the reply being read began in `output`
  std::size_t written = 0;
  std::string output;
  char buffer[65536];
  // Where each line of the request ends: at most kCommandsInFlight lines are sent ahead of
  // the replies. HAProxy 3.2.0's CLI aborted the whole process ("A bogus APPCTX is spinning")
  // on a full apply's 6000 lines pipelined at once; later versions fixed it, but a client
  // that waits for its replies costs nothing (they come back as fast as HAProxy runs them).
  std::vector<std::size_t> line_ends;
  line_ends.reserve(commands.size() + 2);
  for (std::size_t at = request.find('\n'); at != std::string::npos;
       at = request.find('\n', at + 1)) {
    line_ends.push_back(at + 1);
  }
  const auto sendable = [&] {
    const std::size_t lines = prompts + kCommandsInFlight;
    return lines >= line_ends.size() ? request.size() : line_ends[lines - 1];
  };
  auto deadline = SteadyClock::now() + options_.io_timeout;
  // The master CLI (`haproxy -W -S <socket>`) answers "master> " prompts and knows no
  // `show servers state`: no reply ever ended, and the agent waited for ever on a "timed out".
  auto master_cli = [&] {
    return MakeError(ErrorCode::kInvalidArgument,
                     "{} is HAProxy's master CLI (it prompts \"master> \"): HAPROXY_SOCKET_PATH "
                     "must be a stats socket of the worker, declared in haproxy.cfg as \"stats "
                     "socket <path> level admin\"",
                     endpoint_.ToString());
  };
  auto closed = [&](std::string_view how) {
    *closed_unanswered = output.empty();
    return MakeError(ErrorCode::kUnavailable, "{} {} after {} of {} bytes sent",
                     endpoint_.ToString(), how, written, request.size());
  };
  // Read while writing: HAProxy answers each line as it arrives and stops reading when its
  // output buffer is full, so a client that only writes would deadlock on a long batch.
  while (!options_.keep_open || prompts < prompts_expected) {
    if (prompts > 0 && prompts + kNapAbove < prompts_expected) {
      std::this_thread::sleep_for(kBatchNap);
    }
    pollfd pfd{.fd = fd,
               .events = static_cast<short>(POLLIN | (written < sendable() ? POLLOUT : 0)),
               .revents = 0};
    const int ready = ::poll(&pfd, 1, PollTimeoutMs(deadline));
    if (ready < 0) {
      if (errno == EINTR) continue;
      return MakeError(ErrorCode::kUnavailable, "poll on {}: {}", endpoint_.ToString(),
                       Errno(errno));
    }
    if (ready == 0) {
      if (HasMasterPrompt(output)) return master_cli();
      return MakeError(ErrorCode::kUnavailable,
                       "timed out after {} ms without progress on {} ({} of {} bytes sent)",
                       options_.io_timeout.count(), endpoint_.ToString(), written, request.size());
    }
    if (pfd.revents & POLLIN || pfd.revents & (POLLHUP | POLLERR)) {
      const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
      if (n > 0) {
        output.append(buffer, static_cast<std::size_t>(n));
        deadline = SteadyClock::now() + options_.io_timeout;
        for (auto end = output.find(kPromptEnd, scanned); end != std::string::npos;
             end = output.find(kPromptEnd, scanned)) {
          ++prompts;
          scanned = end + kPromptEnd.size();
          reply_start = scanned;
        }
        if (output.size() - reply_start > kMaxReplyBytes) {
          return MakeError(ErrorCode::kUnavailable,
                           "{} answered more than {} MiB to one command: is it HAProxy's stats "
                           "socket (HAPROXY_SOCKET_PATH)?",
                           endpoint_.ToString(), kMaxReplyBytes >> 20);
        }
        // A prompt split across two reads is found from its first byte on.
        scanned = std::max(scanned, output.size() - std::min(output.size(), kPromptEnd.size() - 1));
      } else if (n == 0) {
        if (options_.keep_open) return closed("closed the connection");
        break;  // HAProxy closed the connection: after `quit`, or because it went away.
      } else if (errno == ECONNRESET) {
        return closed("reset the connection");
      } else if (errno != EAGAIN && errno != EINTR) {
        return MakeError(ErrorCode::kUnavailable, "read from {}: {}", endpoint_.ToString(),
                         Errno(errno));
      }
    }
    if (written < sendable() && (pfd.revents & POLLOUT)) {
      const ssize_t n = ::send(fd, request.data() + written, sendable() - written, MSG_NOSIGNAL);
      if (n > 0) {
        written += static_cast<std::size_t>(n);
        deadline = SteadyClock::now() + options_.io_timeout;
      } else if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
        return closed("closed the connection");
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        return MakeError(ErrorCode::kUnavailable, "write to {}: {} ({} of {} bytes sent)",
                         endpoint_.ToString(), Errno(errno), written, request.size());
      }
    }
  }
  if (written < request.size()) {
    return MakeError(ErrorCode::kUnavailable, "{} closed the connection after {} of {} bytes",
                     endpoint_.ToString(), written, request.size());
  }
  auto replies = SplitPromptReplies(output, commands.size(), fresh);
  if (!replies) {
    return MakeError(ErrorCode::kUnavailable, "{}: {}", endpoint_.ToString(),
                     replies.error().message);
  }
  return replies;
}

Result<std::vector<std::string>> SplitPromptReplies(std::string_view output,
                                                    std::size_t expected_commands,
                                                    bool prompt_reply_first) {
  // Every command, `prompt` included, answers with its reply, an empty line and "> ". An empty
  // reply is therefore "\n> ", and "text\n" + "\n> " is a reply of one or more lines.
  static constexpr std::string_view kEnd = kPromptEnd;
  std::vector<std::string> replies;
  replies.reserve(expected_commands);
  std::size_t position = 0;
  bool first = prompt_reply_first;  // the reply to `prompt` itself
  while (replies.size() < expected_commands) {
    const auto end = output.find(kEnd, position);
    if (end == std::string_view::npos) {
      return MakeError(ErrorCode::kUnavailable, "got {} replies for {} commands", replies.size(),
                       expected_commands);
    }
    std::string_view reply = output.substr(position, end - position);
    if (!reply.empty() && reply.back() == '\n') reply.remove_suffix(1);
    if (!first) replies.emplace_back(reply);
    first = false;
    position = end + kEnd.size();
  }
  return replies;
}

Operation Operation::SetAddr(std::string backend, std::string server, int slot_id,
                             std::string address, int port) {
  return {.kind = CommandKind::kAddr,
          .backend = std::move(backend),
          .server = std::move(server),
          .slot_id = slot_id,
          .address = std::move(address),
          .port = port};
}

Operation Operation::SetWeight(std::string backend, std::string server, int slot_id, int weight) {
  return {.kind = CommandKind::kWeight,
          .backend = std::move(backend),
          .server = std::move(server),
          .slot_id = slot_id,
          .weight = weight};
}

Operation Operation::SetState(std::string backend, std::string server, int slot_id,
                              AdminState state) {
  return {.kind = CommandKind::kState,
          .backend = std::move(backend),
          .server = std::move(server),
          .slot_id = slot_id,
          .state = state};
}

Operation Operation::SetHealthDown(std::string backend, std::string server, int slot_id) {
  return {.kind = CommandKind::kHealth,
          .backend = std::move(backend),
          .server = std::move(server),
          .slot_id = slot_id};
}

std::string Render(const Operation& operation) {
  // One format per command (a full apply renders 6000 of them).
  const std::string& backend = operation.backend;
  const std::string& server = operation.server;
  switch (operation.kind) {
    case CommandKind::kAddr:
      return fmt::format("set server {}/{} addr {} port {}", backend, server, operation.address,
                         operation.port);
    case CommandKind::kWeight:
      return fmt::format("set server {}/{} weight {}", backend, server, operation.weight);
    case CommandKind::kState:
      return fmt::format("set server {}/{} state {}", backend, server, ToString(operation.state));
    case CommandKind::kHealth:
      return fmt::format("set server {}/{} health down", backend, server);
    case CommandKind::kOther:
      break;
  }
  return {};
}

Result<std::vector<std::string>> RuntimeApi::Apply(std::span<const Operation> operations) {
  std::vector<std::string> texts;
  texts.reserve(operations.size());
  for (const auto& operation : operations) texts.push_back(Render(operation));
  return Execute(texts);
}

std::string_view ToString(CommandKind kind) {
  switch (kind) {
    case CommandKind::kAddr:
      return "addr";
    case CommandKind::kWeight:
      return "weight";
    case CommandKind::kState:
      return "state";
    case CommandKind::kHealth:
      return "health";
    case CommandKind::kOther:
      return "other";
  }
  return "other";
}

CommandKind KindOf(std::string_view command) {
  if (!command.starts_with("set server ")) return CommandKind::kOther;
  command.remove_prefix(std::string_view("set server ").size());
  const auto space = command.find(' ');
  if (space == std::string_view::npos) return CommandKind::kOther;
  const auto verb = command.substr(space + 1);
  if (verb.starts_with("addr ")) return CommandKind::kAddr;
  if (verb.starts_with("weight ")) return CommandKind::kWeight;
  if (verb.starts_with("state ")) return CommandKind::kState;
  if (verb.starts_with("health ")) return CommandKind::kHealth;
  return CommandKind::kOther;
}

std::optional<std::string> ReplyError(CommandKind kind, std::string_view reply) {
  switch (kind) {
    case CommandKind::kWeight:
    case CommandKind::kState:
    case CommandKind::kHealth:
      if (reply.empty()) return std::nullopt;
      break;
    case CommandKind::kAddr:
      // "IP changed from 'a' to 'b', port changed from '80' to '81' by 'stats socket command'",
      // with "no need to change the addr" / "no need to change the port" for unchanged parts
      // (2.x). HAProxy 3.0 leaves out what did not change: "port changed from '80' to '81' by
      // ...", and "nothing changed" (read as refusals, the server went to maint for a cycle).
      if ((reply.starts_with("IP changed from") || reply.starts_with("port changed from") ||
           reply.starts_with("no need to change") || reply == "nothing changed") &&
          reply.find('\n') == std::string_view::npos) {
        return std::nullopt;
      }
      break;
    case CommandKind::kOther:
      return std::nullopt;  // reads (`show ...`) are judged by their parser
  }
  // Keep the first line only: `Unknown command` appends the whole help text.
  const auto newline = reply.find('\n');
  std::string first_line(reply.substr(0, newline));
  if (first_line.empty()) first_line = "(unexpected empty reply)";
  return first_line;
}

Result<AppliedOperations> ApplyAddressesFirst(RuntimeApi& api,
                                              std::span<const Operation> operations) {
  using ServerKey = std::pair<std::string_view, std::string_view>;  // backend, server
  struct ServerKeyHash {
    std::size_t operator()(const ServerKey& key) const {
      const std::hash<std::string_view> hash;
      return hash(key.first) * 31 + hash(key.second);
    }
  };
  // Where each server's `addr` is, if it has one (hashed: an ordered map cost a full apply of
  // 2 x 1000 slots 1 ms, docs/benchmarks.md).
  std::unordered_map<ServerKey, std::size_t, ServerKeyHash> address_at;
  for (std::size_t i = 0; i < operations.size(); ++i) {
    if (operations[i].kind == CommandKind::kAddr) {
      address_at.emplace(ServerKey{operations[i].backend, operations[i].server}, i);
    }
  }
  if (address_at.empty()) {
    auto replies = api.Apply(operations);
    if (!replies) return replies.error();
    return AppliedOperations{std::vector<Operation>(operations.begin(), operations.end()),
                             std::move(*replies)};
  }
  std::vector<Operation> first;
  std::vector<Operation> second;
  for (std::size_t i = 0; i < operations.size(); ++i) {
    const auto found = address_at.find(ServerKey{operations[i].backend, operations[i].server});
    (found != address_at.end() && i <= found->second ? first : second).push_back(operations[i]);
  }
  auto first_replies = api.Apply(first);
  if (!first_replies) return first_replies.error();
  std::set<ServerKey> refused;
  for (std::size_t i = 0; i < first.size(); ++i) {
    if (first[i].kind == CommandKind::kAddr &&
        ReplyError(CommandKind::kAddr, (*first_replies)[i])) {
      refused.emplace(first[i].backend, first[i].server);
    }
  }
  std::erase_if(second, [&](const Operation& operation) {
    return refused.contains(ServerKey{operation.backend, operation.server});
  });
  for (const auto& operation : first) {
    if (operation.kind == CommandKind::kAddr &&
        refused.contains({operation.backend, operation.server})) {
      second.push_back(Operation::SetState(operation.backend, operation.server, operation.slot_id,
                                           AdminState::kMaint));
    }
  }
  AppliedOperations applied{std::move(first), std::move(*first_replies)};
  if (second.empty()) return applied;
  auto second_replies = api.Apply(second);
  if (!second_replies) return second_replies.error();
  applied.operations.insert(applied.operations.end(), std::make_move_iterator(second.begin()),
                            std::make_move_iterator(second.end()));
  applied.replies.insert(applied.replies.end(), std::make_move_iterator(second_replies->begin()),
                         std::make_move_iterator(second_replies->end()));
  return applied;
}

}  // namespace hsdo::haproxy
