// FileWatcher: wakes a loop as soon as a file changes, instead of at its next poll. Watches one
// directory with inotify and calls `on_change` (from its own thread) whenever one of the named
// files in it is created, written, renamed into place or removed. The agent uses it for the
// SQLite database and its -wal file (a write by the orchestrator) and for HAProxy's stats
// socket (a reload binds a new socket and renames it over the old one).
//
// Events are hints, not data: the caller re-reads what it watches, and keeps polling as a
// fallback (inotify does not see writes made on another host, through NFS, or by mmap).
//
// `writer`, when given, says where the files' writer is: still between its first write and the
// moment its change becomes visible (SQLite: the WAL write lock, held through the commit's
// fsync and the -shm update that inotify cannot see), done, or unknown. A writer busy at the
// first event is polled every millisecond (up to kMaxBusyMs), sleeping through the events of
// its own writes; otherwise the files must first go quiet for kSettleMs, then the writer is
// asked again. When it then says done, the change is visible and one notification is
// enough; otherwise (no `writer`, unknown, waited too long) the confirmations follow.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"

namespace hsdo {

class FileWatcher {
 public:
  enum class Writer { kUnknown, kBusy, kDone };

  // Watches `names` (plain file names, no '/') in `directory`, which must exist.
  static Result<std::unique_ptr<FileWatcher>> Start(const std::string& directory,
                                                    std::vector<std::string> names,
                                                    std::function<void()> on_change,
                                                    std::function<Writer()> writer = {});
  // Watches `path`'s directory for `path` and, for each suffix, `path` + suffix.
  static Result<std::unique_ptr<FileWatcher>> ForPath(const std::string& path,
                                                      const std::vector<std::string>& suffixes,
                                                      std::function<void()> on_change,
                                                      std::function<Writer()> writer = {});
  ~FileWatcher();  // stops the thread; on_change is not called after it returns

  // False from the moment the watched directory is removed or moved away (on_change is called
  // then) until a directory is at its path again, which is then watched (and on_change called:
  // its files are new). Meanwhile callers must poll.
  bool Watching() const { return watch_.load() >= 0; }

  // Runs `write`, a write of this process into the watched files that the reader need not
  // see (an SQLite agent's own node report), with the watch narrowed so that the write wakes
  // no thread; then calls on_change (from this thread, maybe while the watcher's thread calls
  // it too), which must tell another process's write that the narrowed watch missed from none
  // (SqliteNodeReports::OthersMayHaveWritten).
  // Each write woke the watcher's thread, and its writer paid for that wake-up too.
  void Unwatched(const std::function<void()>& write);
  FileWatcher(const FileWatcher&) = delete;
  FileWatcher& operator=(const FileWatcher&) = delete;

 private:
  FileWatcher(int inotify_fd, int watch, std::string directory, int stop_fd,
              std::vector<std::string> names, std::function<void()> on_change,
              std::function<Writer()> writer);
  enum class Wait { kChanged, kOther, kTimeout, kStop };
  static constexpr int kSettleMs = 2;
  static constexpr int kMaxSettleRounds = 10;  // a file written without pause still notifies
  static constexpr int kConfirmMs = 25;
  static constexpr int kConfirmRounds = 4;  // at 25, 75, 175 and 375 ms
  static constexpr int kBusyPollMs = 1;
  static constexpr int kMaxBusyMs = 1000;
  static constexpr const char* kThreadName = "hsdo-watch";
  // How often a lost directory is looked for at its path again.
  static constexpr int kRewatchMs = 100;
  void Run();
  bool Drain();
  // After the directory was lost: watches the one at its path now, if any.
  bool Rewatch();
  Wait WaitForEvents(int timeout_ms);
  bool Settle();       // false when asked to stop
  bool Sleep(int ms);  // false when asked to stop
  // Waits while the writer is busy: nullopt when asked to stop, else what it said last.
  std::optional<Writer> WaitWhileBusy();
  // After an event: waits until the change can be read (see Run). Same result.
  std::optional<Writer> AwaitChange();

  int inotify_fd_;
  // The directory's watch descriptor; -1 while it is lost (removed or moved away).
  std::atomic<int> watch_;
  std::string directory_;  // its path, to narrow and widen the watch (Unwatched)
  int stop_fd_;            // an eventfd that ends Run()
  std::vector<std::string> names_;
  std::function<void()> on_change_;
  std::function<Writer()> writer_;
  std::thread thread_;
};

}  // namespace hsdo
