#include "common/file_watcher.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

#include "common/testing/temp_dir.h"
#include "common/wakeup.h"

namespace hsdo {
namespace {

using std::chrono::seconds;

// Counts notifications; WaitFor returns as soon as one arrives (no fixed sleep).
struct Counter {
  Wakeup wakeup;
  std::atomic<int> count{0};
  std::function<void()> callback() {
    return [this] {
      ++count;
      wakeup.Notify();
    };
  }
};

void Append(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::app);
  out << text;
}

TEST(FileWatcherTest, WritesToWatchedFilesNotify) {
  testing::TempDir dir;
  Counter counter;
  auto watcher = FileWatcher::ForPath(dir.File("db"), {"-wal"}, counter.callback());
  ASSERT_TRUE(watcher.ok()) << watcher.error().message;

  Append(dir.File("db-wal"), "x");
  ASSERT_TRUE(counter.wakeup.WaitFor(seconds(5)));
  EXPECT_GE(counter.count.load(), 1);
  const int after_wal = counter.count.load();
  Append(dir.File("db"), "y");
  const auto deadline = std::chrono::steady_clock::now() + seconds(5);
  while (counter.count.load() == after_wal && std::chrono::steady_clock::now() < deadline) {
    counter.wakeup.WaitFor(std::chrono::milliseconds(100));
  }
  EXPECT_GT(counter.count.load(), after_wal);
}

TEST(FileWatcherTest, RenameIntoPlaceNotifies) {
  testing::TempDir dir;
  Counter counter;
  auto watcher = FileWatcher::ForPath(dir.File("s.sock"), {}, counter.callback());
  ASSERT_TRUE(watcher.ok());
  Append(dir.File("s.sock.123.tmp"), "");
  ASSERT_EQ(std::rename(dir.File("s.sock.123.tmp").c_str(), dir.File("s.sock").c_str()), 0);
  ASSERT_TRUE(counter.wakeup.WaitFor(seconds(5)));
  EXPECT_GE(counter.count.load(), 1);
}

TEST(FileWatcherTest, UnwatchedNamesNeverNotify) {
  testing::TempDir dir;
  Counter counter;
  auto watcher = FileWatcher::ForPath(dir.File("db"), {"-wal"}, counter.callback());
  ASSERT_TRUE(watcher.ok());
  for (int i = 0; i < 20; ++i) Append(dir.File("db-shm"), "x");
  // Absence takes a window: well past the settle delay and the first confirmation.
  counter.wakeup.WaitFor(std::chrono::milliseconds(200));
  EXPECT_EQ(counter.count.load(), 0);
}

// SQLite run by root `fchown`s the -wal at every connection's first read, before any lock:
// that is no change of the data, and must neither wake an agent nor look like a write.
TEST(FileWatcherTest, AChangeOfOwnerOrModeDoesNotNotify) {
  testing::TempDir dir;
  Append(dir.File("db-wal"), "x");
  Counter counter;
  auto watcher = FileWatcher::ForPath(dir.File("db"), {"-wal"}, counter.callback());
  ASSERT_TRUE(watcher.ok());
  ASSERT_EQ(::chown(dir.File("db-wal").c_str(), ::geteuid(), ::getegid()), 0);
  std::filesystem::permissions(dir.File("db-wal"), std::filesystem::perms::owner_read,
                               std::filesystem::perm_options::remove);
  counter.wakeup.WaitFor(std::chrono::milliseconds(200));
  EXPECT_EQ(counter.count.load(), 0);
}

// An agent's own node report goes into the SQLite files it watches: written Unwatched, it
// wakes no thread, and the watch is whole again afterwards.
TEST(FileWatcherTest, AnUnwatchedWriteWakesNoThreadAndCallsBackOnceFromTheWriter) {
  testing::TempDir dir;
  std::atomic<int> from_writer{0};
  std::atomic<int> from_watcher{0};
  Wakeup woken;
  const auto writer_thread = std::this_thread::get_id();
  auto watcher = FileWatcher::ForPath(dir.File("db"), {"-wal"}, [&] {
    ++(std::this_thread::get_id() == writer_thread ? from_writer : from_watcher);
    woken.Notify();
  });
  ASSERT_TRUE(watcher.ok());
  for (int i = 0; i < 3; ++i) {
    (*watcher)->Unwatched([&] {
      Append(dir.File("db-wal"), "report");
      Append(dir.File("db"), "x");
    });
  }
  EXPECT_EQ(from_writer.load(), 3);
  // Past the settle delay and a confirmation (the writer's calls have set `woken` already).
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(from_watcher.load(), 0);

  Append(dir.File("db-wal"), "another process's write");
  const auto deadline = std::chrono::steady_clock::now() + seconds(5);
  while (from_watcher.load() == 0 && std::chrono::steady_clock::now() < deadline) {
    woken.WaitFor(std::chrono::milliseconds(50));
  }
  EXPECT_GE(from_watcher.load(), 1) << "the watch was not whole again";
}

// Waits until `done` holds (up to 5 s); false when it never did.
bool Eventually(Counter& counter, const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + seconds(5);
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    counter.wakeup.WaitFor(std::chrono::milliseconds(20));
  }
  return true;
}

// A watch is on a directory, not on its path: once the directory is removed or moved away,
// the watcher says so and notifies, then watches the directory made again at the path.
TEST(FileWatcherTest, ADirectoryRemovedOrMovedAwayIsWatchedAgainOnceMadeAgain) {
  for (const bool remove : {false, true}) {
    SCOPED_TRACE(remove ? "removed" : "moved away");
    testing::TempDir dir;
    std::filesystem::create_directory(dir.File("sub"));
    Counter counter;
    auto watcher = FileWatcher::ForPath(dir.File("sub/db"), {"-wal"}, counter.callback());
    ASSERT_TRUE(watcher.ok());
    EXPECT_TRUE((*watcher)->Watching());
    if (remove) {
      std::filesystem::remove(dir.File("sub"));
    } else {
      std::filesystem::rename(dir.File("sub"), dir.File("old"));
    }
    ASSERT_TRUE(Eventually(counter, [&] { return counter.count.load() > 0; }));
    EXPECT_FALSE((*watcher)->Watching());
    bool written = false;
    (*watcher)->Unwatched([&] { written = true; });  // nothing to narrow: simply written
    EXPECT_TRUE(written);

    const int before = counter.count.load();
    std::filesystem::create_directory(dir.File("sub"));
    EXPECT_TRUE(Eventually(counter, [&] {
      return (*watcher)->Watching() && counter.count.load() > before;
    })) << "the directory made again is not watched";
    // Its files' writes notify (past the confirmations of the notification above).
    std::this_thread::sleep_for(std::chrono::milliseconds(450));
    const int watched = counter.count.load();
    Append(dir.File("sub/db-wal"), "x");
    EXPECT_TRUE(Eventually(counter, [&] { return counter.count.load() > watched; }));
  }
}

TEST(FileWatcherTest, NotifiesAgainForAReaderThatLookedTooEarly) {
  testing::TempDir dir;
  Counter counter;
  auto watcher = FileWatcher::ForPath(dir.File("db"), {"-wal"}, counter.callback());
  ASSERT_TRUE(watcher.ok());
  Append(dir.File("db-wal"), "x");
  const auto deadline = std::chrono::steady_clock::now() + seconds(5);
  while (counter.count.load() < 5 && std::chrono::steady_clock::now() < deadline) {
    counter.wakeup.WaitFor(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(counter.count.load(), 5);  // once, then the four confirmations
}

// A writer still busy (SQLite: holding its write lock while it fsyncs and publishes the
// commit) has nothing visible yet: the watcher notifies once it is done, not before.
TEST(FileWatcherTest, WaitsWhileTheWriterIsBusy) {
  testing::TempDir dir;
  Counter counter;
  std::atomic<bool> busy{true};
  std::atomic<int> busy_checks{0};
  auto watcher = FileWatcher::ForPath(dir.File("db"), {"-wal"}, counter.callback(), [&] {
    ++busy_checks;
    return busy.load() ? FileWatcher::Writer::kBusy : FileWatcher::Writer::kDone;
  });
  ASSERT_TRUE(watcher.ok());
  Append(dir.File("db-wal"), "x");
  const auto deadline = std::chrono::steady_clock::now() + seconds(5);
  while (busy_checks.load() < 3 && std::chrono::steady_clock::now() < deadline) {
    counter.wakeup.WaitFor(std::chrono::milliseconds(10));
  }
  ASSERT_GE(busy_checks.load(), 3);  // it asked, and was told to wait, several times
  EXPECT_EQ(counter.count.load(), 0);
  busy = false;
  ASSERT_TRUE(counter.wakeup.WaitFor(seconds(5)));
  EXPECT_GE(counter.count.load(), 1);
}

// A writer that says it is done has made its change visible: no reader can have looked too
// early, so no confirmation follows (an SQLite agent's own node report, every 2 x INTERVAL,
// was five wake-ups).
TEST(FileWatcherTest, NotifiesOnceWhenTheWriterIsDone) {
  testing::TempDir dir;
  Counter counter;
  auto watcher = FileWatcher::ForPath(dir.File("db"), {"-wal"}, counter.callback(),
                                      [] { return FileWatcher::Writer::kDone; });
  ASSERT_TRUE(watcher.ok());
  Append(dir.File("db-wal"), "x");
  ASSERT_TRUE(counter.wakeup.WaitFor(seconds(5)));
  // Past the first three confirmations (25, 75 and 175 ms after the notification).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(counter.count.load(), 1);
}

long VoluntarySwitches(pid_t tid) {
  std::ifstream status("/proc/self/task/" + std::to_string(tid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with("voluntary_ctxt_switches:")) return std::stol(line.substr(24));
  }
  return -1;
}

// A commit is several writes in a row (SQLite: each frame to the -wal) under the writer's
// lock. The watcher, woken by the first, sleeps through the others and asks the writer again
// every millisecond: about one wake-up per millisecond of commit, not one per write.
TEST(FileWatcherTest, SleepsThroughTheWritesOfABusyWriter) {
  testing::TempDir dir;
  Counter counter;
  std::atomic<bool> busy{false};
  std::atomic<pid_t> watcher_tid{0};
  auto watcher = FileWatcher::ForPath(dir.File("db"), {"-wal"}, counter.callback(), [&] {
    watcher_tid = ::gettid();
    return busy.load() ? FileWatcher::Writer::kBusy : FileWatcher::Writer::kDone;
  });
  ASSERT_TRUE(watcher.ok());
  Append(dir.File("db-wal"), "x");  // a first commit: the watcher thread's id
  ASSERT_TRUE(counter.wakeup.WaitFor(seconds(5)));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const int notified = counter.count.load();
  const long before = VoluntarySwitches(watcher_tid);
  ASSERT_GE(before, 0);

  busy = true;
  const auto start = std::chrono::steady_clock::now();
  constexpr int kWrites = 40;
  for (int i = 0; i < kWrites; ++i) {
    Append(dir.File("db-wal"), "frame");
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  const auto commit_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::steady_clock::now() - start)
                             .count();
  busy = false;
  const auto deadline = std::chrono::steady_clock::now() + seconds(5);
  while (counter.count.load() == notified && std::chrono::steady_clock::now() < deadline) {
    counter.wakeup.WaitFor(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(counter.count.load(), notified + 1);
  const long wakes = VoluntarySwitches(watcher_tid) - before;
  // About one per millisecond of the commit (measured: commit_ms + 1); waking at each write
  // was twice kWrites (on a loaded machine the commit lasts longer and the bound with it).
  EXPECT_LE(wakes, commit_ms + kWrites / 4)
      << wakes << " wake-ups for " << kWrites << " writes in " << commit_ms << " ms";
}

TEST(FileWatcherTest, MissingDirectoryIsAnError) {
  auto watcher = FileWatcher::Start("/nonexistent/hsdo", {"db"}, [] {});
  EXPECT_FALSE(watcher.ok());
}

}  // namespace
}  // namespace hsdo
