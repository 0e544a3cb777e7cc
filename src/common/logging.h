// hsdo's log lines: one formatter for every line, so that escaping and structure are decided
// once. Text (the default) or JSON (LOG_FORMAT=json: one object per line with time, level,
// message and structured fields), optionally prefixed with journald priorities ("<3>", as
// sd-daemon(3) describes) when stderr is connected to the journal.
//
// Values that came from outside (a server name from the store, an error body from a peer) may
// hold newlines or other control bytes; the formatter escapes them in the message and in every
// field, so one call always gives exactly one line.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

namespace hsdo::logging {

enum class Format { kText, kJson };

struct Options {
  Format format = Format::kText;
  bool debug = false;
  // Prefix each line with its journald priority (systemd's SyslogLevelPrefix).
  bool journal_priorities = false;
};

// The formatter of every hsdo log line (Setup installs it).
std::unique_ptr<spdlog::formatter> MakeFormatter(const Options& options);

// Installs the default "hsdo" logger on stderr with the formatter below.
void Setup(const Options& options);

// True when JOURNAL_STREAM (its value given here) names the device and inode of stderr, as
// systemd sets it for a service whose stderr is the journal.
bool StderrIsJournal(std::string_view journal_stream);

// A structured field of a log line: slot, address, backend, generation, ...
struct Field {
  Field(std::string_view name, std::string_view value) : key(name), text(value) {}
  Field(std::string_view name, const std::string& value) : key(name), text(value) {}
  Field(std::string_view name, const char* value) : key(name), text(value) {}
  template <typename Int>
  requires std::is_integral_v<Int> Field(std::string_view name, Int value)
      : key(name), text(std::to_string(value)), number(true) {}

  std::string_view key;
  std::string text;
  bool number = false;  // written without quotes in JSON
};

// Control bytes as C-style escapes (\n \r \t, others \xNN); everything else unchanged.
std::string EscapeControlCharacters(std::string_view text);

// The pure part of the formatter, for tests: one line (with its trailing newline).
struct Line {
  std::int64_t unix_millis = 0;
  spdlog::level::level_enum level = spdlog::level::info;
  std::string_view message;
  const std::vector<Field>* fields = nullptr;
};
std::string FormatLine(const Line& line, const Options& options);

namespace detail {
// The fields of the call being logged on this thread (the logger is synchronous).
class FieldScope {
 public:
  explicit FieldScope(const std::vector<Field>& fields);
  ~FieldScope();
  FieldScope(const FieldScope&) = delete;
  FieldScope& operator=(const FieldScope&) = delete;

 private:
  const std::vector<Field>* previous_;
};
}  // namespace detail

// Logs `format` with structured `fields`: in text they follow the message as key=value, in
// JSON they are members of the line's object.
template <typename... Args>
void Log(spdlog::level::level_enum level, std::initializer_list<Field> fields,
         fmt::format_string<Args...> format, Args&&... args) {
  const std::vector<Field> list(fields);
  detail::FieldScope scope(list);
  spdlog::log(level, format, std::forward<Args>(args)...);
}

}  // namespace hsdo::logging
