// LogCapture: what spdlog's default logger writes while it lives, for tests that check what is
// logged (and how often).
#pragma once

#include <memory>
#include <sstream>
#include <string>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

namespace hsdo::testing {

class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(stream_);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;
  std::string text() {
    spdlog::default_logger()->flush();
    return stream_.str();
  }
  // How many times `needle` was written.
  int Count(const std::string& needle) {
    const std::string all = text();
    int count = 0;
    for (auto pos = all.find(needle); pos != std::string::npos; pos = all.find(needle, pos + 1)) {
      ++count;
    }
    return count;
  }

 private:
  std::ostringstream stream_;
  std::shared_ptr<spdlog::logger> previous_;
};

}  // namespace hsdo::testing
