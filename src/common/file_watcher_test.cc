#include "common/file_watcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
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

TEST(FileWatcherTest, MissingDirectoryIsAnError) {
  auto watcher = FileWatcher::Start("/nonexistent/hsdo", {"db"}, [] {});
  EXPECT_FALSE(watcher.ok());
}

}  // namespace
}  // namespace hsdo
