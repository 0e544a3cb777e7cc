#include "common/file_watcher.h"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include <spdlog/spdlog.h>

namespace hsdo {
namespace {

// Everything that can mean "the file is not what it was": a write (IN_MODIFY), a writer done
// (IN_CLOSE_WRITE), a new file (IN_CREATE), one renamed into place (IN_MOVED_TO, how HAProxy
// installs its socket), a removal. Not a change of owner or mode (IN_ATTRIB): every SQLite
// connection opened by root `fchown`s the -wal file, before it takes any lock, so a reader
// (`hsdo status`, a transaction about to begin) would wake the agents, and could have them
// notified before the write that follows is visible.
// The directory's own removal or move: the watch no longer covers its path (Watching).
constexpr std::uint32_t kEvents = IN_MODIFY | IN_CLOSE_WRITE | IN_CREATE | IN_MOVED_TO |
                                  IN_MOVED_FROM | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF;

}  // namespace

Result<std::unique_ptr<FileWatcher>> FileWatcher::Start(const std::string& directory,
                                                        std::vector<std::string> names,
                                                        std::function<void()> on_change,
                                                        std::function<Writer()> writer) {
  const int inotify_fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd < 0) {
    return MakeError(ErrorCode::kUnavailable, "inotify_init1: {}", std::strerror(errno));
  }
  const int watch = ::inotify_add_watch(inotify_fd, directory.c_str(), kEvents | IN_ONLYDIR);
  if (watch < 0) {
    const int err = errno;
    ::close(inotify_fd);
    return MakeError(ErrorCode::kUnavailable, "cannot watch {}: {}", directory, std::strerror(err));
  }
  const int stop_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (stop_fd < 0) {
    const int err = errno;
    ::close(inotify_fd);
    return MakeError(ErrorCode::kUnavailable, "eventfd: {}", std::strerror(err));
  }
  return std::unique_ptr<FileWatcher>(new FileWatcher(inotify_fd, watch, directory, stop_fd,
                                                      std::move(names), std::move(on_change),
                                                      std::move(writer)));
}

Result<std::unique_ptr<FileWatcher>> FileWatcher::ForPath(const std::string& path,
                                                          const std::vector<std::string>& suffixes,
                                                          std::function<void()> on_change,
                                                          std::function<Writer()> writer) {
  const std::filesystem::path file = std::filesystem::absolute(path);
  const std::string name = file.filename().string();
  std::vector<std::string> names{name};
  for (const auto& suffix : suffixes) names.push_back(name + suffix);
  return Start(file.parent_path().string(), std::move(names), std::move(on_change),
               std::move(writer));
}

FileWatcher::FileWatcher(int inotify_fd, int watch, std::string directory, int stop_fd,
                         std::vector<std::string> names, std::function<void()> on_change,
                         std::function<Writer()> writer)
    : inotify_fd_(inotify_fd),
      watch_(watch),
      directory_(std::move(directory)),
      stop_fd_(stop_fd),
      names_(std::move(names)),
      on_change_(std::move(on_change)),
      writer_(std::move(writer)),
      thread_([this] { Run(); }) {}

FileWatcher::~FileWatcher() {
  const std::uint64_t one = 1;
  (void)!::write(stop_fd_, &one, sizeof(one));
  thread_.join();
  ::close(inotify_fd_);
  ::close(stop_fd_);
}

void FileWatcher::Unwatched(const std::function<void()>& write) {
  // The same directory gets the same watch descriptor back, its mask replaced: only the
  // directory's own removal or move, which no watched name matches, is left. Another directory
  // at the path now (moved away and made again) gets a new descriptor: that one is dropped, and
  // the write is watched as any other. A lost directory is looked for by the watcher's thread
  // only (Rewatch).
  const int watch = watch_.load();
  if (watch < 0) {
    write();
    return;
  }
  const int narrowed = ::inotify_add_watch(inotify_fd_, directory_.c_str(),
                                           IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR);
  if (narrowed != watch) {
    if (narrowed >= 0) ::inotify_rm_watch(inotify_fd_, narrowed);
    write();
    return;
  }
  write();
  // Fails only once the directory is gone: nothing is left to watch there.
  (void)::inotify_add_watch(inotify_fd_, directory_.c_str(), kEvents | IN_ONLYDIR);
  on_change_();
}

// Reads every queued event; true when one was for a watched name (or events were lost).
bool FileWatcher::Drain() {
  // Big enough for a burst of events; inotify never splits an event across reads.
  alignas(inotify_event) char buffer[4096];
  bool changed = false;
  for (;;) {
    const ssize_t n = ::read(inotify_fd_, buffer, sizeof(buffer));
    if (n <= 0) return changed;  // EAGAIN: drained
    for (ssize_t offset = 0; offset < n;) {
      const auto* event = reinterpret_cast<const inotify_event*>(buffer + offset);
      offset += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
      // IN_Q_OVERFLOW: events were lost, so anything may have changed.
      if (event->mask & IN_Q_OVERFLOW) changed = true;
      // Events of a directory no longer at the path (moved away), or of the watch Unwatched
      // added and dropped, say nothing about the files at the path.
      const int watch = watch_.load();
      if (event->wd != watch) continue;
      // The directory itself was removed or moved away (IN_IGNORED follows a removal): its
      // path may name another directory now, or soon, whose files this watch never sees.
      if (event->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
        if (event->mask & IN_MOVE_SELF) ::inotify_rm_watch(inotify_fd_, watch);
        watch_ = -1;
        spdlog::warn(
            "{} was removed or moved away: its files are not watched (a change is seen at the "
            "next poll) until a directory is at that path again",
            directory_);
        changed = true;
      }
      if (event->len > 0 && std::find(names_.begin(), names_.end(), event->name) != names_.end()) {
        changed = true;
      }
    }
  }
}

bool FileWatcher::Rewatch() {
  const int watch = ::inotify_add_watch(inotify_fd_, directory_.c_str(), kEvents | IN_ONLYDIR);
  if (watch < 0) return false;
  watch_ = watch;
  spdlog::info("{} is there again: watching its files again", directory_);
  return true;
}

// Waits up to `timeout_ms` (-1: forever) for events. kStop when the destructor asks to stop.
FileWatcher::Wait FileWatcher::WaitForEvents(int timeout_ms) {
  pollfd fds[2] = {{.fd = inotify_fd_, .events = POLLIN, .revents = 0},
                   {.fd = stop_fd_, .events = POLLIN, .revents = 0}};
  for (;;) {
    const int ready = ::poll(fds, 2, timeout_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0 || fds[1].revents != 0) return Wait::kStop;
    if (ready == 0) return Wait::kTimeout;
    return Drain() ? Wait::kChanged : Wait::kOther;
  }
}

bool FileWatcher::Settle() {
  for (int i = 0; i < kMaxSettleRounds; ++i) {
    const Wait wait = WaitForEvents(kSettleMs);
    if (wait == Wait::kStop) return false;
    if (wait == Wait::kTimeout) break;
  }
  return true;
}

bool FileWatcher::Sleep(int ms) {
  pollfd stop = {.fd = stop_fd_, .events = POLLIN, .revents = 0};
  while (::poll(&stop, 1, ms) < 0 && errno == EINTR) {
  }
  return stop.revents == 0;
}

std::optional<FileWatcher::Writer> FileWatcher::WaitWhileBusy() {
  Writer writer = writer_();
  for (int waited = 0;; waited += kBusyPollMs) {
    if (writer != Writer::kBusy) {
      // A write's events are all queued before its writer lets go: drain the last ones (else
      // they would notify again), then ask again, for a write that began meanwhile.
      Drain();
      writer = writer_();
      if (writer != Writer::kBusy) return writer;
    }
    if (waited >= kMaxBusyMs) return Writer::kUnknown;  // notify anyway, and confirm
    // Events that come meanwhile are from writes the lock covers: sleep through them.
    if (!Sleep(kBusyPollMs)) return std::nullopt;
    Drain();
    writer = writer_();
  }
}

std::optional<FileWatcher::Writer> FileWatcher::AwaitChange() {
  // A writer caught in the act is waited for without waking at each of its writes.
  if (writer_ && writer_() == Writer::kBusy) return WaitWhileBusy();
  // Done already, unknown, or files written without a lock (a copy): kSettleMs of quiet first.
  if (!Settle()) return std::nullopt;
  return writer_ ? WaitWhileBusy() : Writer::kUnknown;
}

void FileWatcher::Run() {
  ::pthread_setname_np(::pthread_self(), kThreadName);  // for `top -H` and the tests
  // An event says that a write started, not that it is visible: SQLite appends the frames to
  // the -wal file and only then publishes the commit through the mmapped -shm (which inotify
  // does not see); HAProxy renames its socket into place before it listens. So notify once the
  // writer caught in the act is done (AwaitChange), or else once the files have been quiet for
  // kSettleMs, then again kConfirmMs, 2x, 4x and 8x that later, for a reader that looked too
  // early (a writer descheduled between the two steps on a busy host), unless the writer says
  // it is done (then the change is visible: one notification).
  // While the directory is lost, it is looked for again every kRewatchMs; once back, its files
  // may be new: notify.
  int confirms_left = 0;
  int confirm_ms = kConfirmMs;
  for (;;) {
    int timeout_ms = confirms_left > 0 ? confirm_ms : -1;
    if (!Watching()) timeout_ms = timeout_ms < 0 ? kRewatchMs : std::min(timeout_ms, kRewatchMs);
    const Wait wait = WaitForEvents(timeout_ms);
    if (wait == Wait::kStop) return;
    if (!Watching() && Rewatch()) {
      on_change_();
      confirms_left = kConfirmRounds;
      confirm_ms = kConfirmMs;
      continue;
    }
    if (wait == Wait::kTimeout) {
      if (confirms_left > 0) {
        --confirms_left;
        confirm_ms *= 2;
        on_change_();
      }
      continue;
    }
    if (wait == Wait::kOther) continue;
    const auto writer = AwaitChange();
    if (!writer) return;
    on_change_();
    confirms_left = *writer == Writer::kDone ? 0 : kConfirmRounds;
    confirm_ms = kConfirmMs;
  }
}

}  // namespace hsdo
