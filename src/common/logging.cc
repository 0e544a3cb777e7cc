#include "common/logging.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <ctime>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace hsdo::logging {
namespace {

thread_local const std::vector<Field>* g_fields = nullptr;

bool IsControl(unsigned char c) { return c < 0x20 || c == 0x7f; }

// sd-daemon(3): <2> critical, <3> error, <4> warning, <6> info, <7> debug.
int JournalPriority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::critical:
      return 2;
    case spdlog::level::err:
      return 3;
    case spdlog::level::warn:
      return 4;
    case spdlog::level::info:
      return 6;
    default:
      return 7;
  }
}

void AppendJsonString(std::string& out, std::string_view text) {
  out += '"';
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    switch (ch) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (IsControl(c)) {
          out += fmt::format("\\u{:04x}", c);
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

// A text field value: escaped, and quoted when it would not read as one word.
void AppendTextValue(std::string& out, const Field& field) {
  const std::string escaped = EscapeControlCharacters(field.text);
  if (!field.number && (escaped.empty() || escaped.find_first_of(" \"=") != std::string::npos)) {
    out += '"';
    for (const char ch : escaped) {
      if (ch == '"') out += '\\';
      out += ch;
    }
    out += '"';
  } else {
    out += escaped;
  }
}

std::string Timestamp(std::int64_t unix_millis) {
  const std::time_t seconds = static_cast<std::time_t>(unix_millis / 1000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", utc.tm_year + 1900,
                     utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                     unix_millis % 1000);
}

class LineFormatter final : public spdlog::formatter {
 public:
  explicit LineFormatter(Options options) : options_(options) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const auto millis =
        std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch());
    const std::string line =
        FormatLine(Line{.unix_millis = millis.count(),
                        .level = msg.level,
                        .message = std::string_view(msg.payload.data(), msg.payload.size()),
                        .fields = g_fields},
                   options_);
    dest.append(line.data(), line.data() + line.size());
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<LineFormatter>(options_);
  }

 private:
  Options options_;
};

}  // namespace

std::string EscapeControlCharacters(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (ch == '\n') {
      out += "\\n";
    } else if (ch == '\r') {
      out += "\\r";
    } else if (ch == '\t') {
      out += "\\t";
    } else if (IsControl(c)) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += ch;
    }
  }
  return out;
}

std::string FormatLine(const Line& line, const Options& options) {
  std::string out;
  if (options.journal_priorities) out += fmt::format("<{}>", JournalPriority(line.level));
  const auto level_name = spdlog::level::to_string_view(line.level);
  if (options.format == Format::kJson) {
    out += "{\"time\":";
    AppendJsonString(out, Timestamp(line.unix_millis));
    out += ",\"level\":";
    AppendJsonString(out, std::string_view(level_name.data(), level_name.size()));
    out += ",\"message\":";
    AppendJsonString(out, line.message);
    if (line.fields != nullptr) {
      for (const auto& field : *line.fields) {
        out += ',';
        AppendJsonString(out, field.key);
        out += ':';
        if (field.number) {
          out += field.text;
        } else {
          AppendJsonString(out, field.text);
        }
      }
    }
    out += "}\n";
    return out;
  }
  out += fmt::format("{} {:<5} ", Timestamp(line.unix_millis),
                     std::string_view(level_name.data(), level_name.size()));
  out += EscapeControlCharacters(line.message);
  if (line.fields != nullptr) {
    for (const auto& field : *line.fields) {
      out += ' ';
      out += EscapeControlCharacters(field.key);
      out += '=';
      AppendTextValue(out, field);
    }
  }
  out += '\n';
  return out;
}

bool StderrIsJournal(std::string_view journal_stream) {
  // "<device>:<inode>" in decimal, as systemd.exec(5) documents.
  const auto colon = journal_stream.find(':');
  if (colon == std::string_view::npos) return false;
  struct stat st {};
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  return std::string(journal_stream.substr(0, colon)) == std::to_string(st.st_dev) &&
         std::string(journal_stream.substr(colon + 1)) == std::to_string(st.st_ino);
}

std::unique_ptr<spdlog::formatter> MakeFormatter(const Options& options) {
  return std::make_unique<LineFormatter>(options);
}

void Setup(const Options& options) {
  auto logger = spdlog::get("hsdo");
  if (!logger) logger = spdlog::stderr_logger_mt("hsdo");
  logger->set_formatter(MakeFormatter(options));
  logger->set_level(options.debug ? spdlog::level::debug : spdlog::level::info);
  spdlog::set_default_logger(logger);
}

namespace detail {
FieldScope::FieldScope(const std::vector<Field>& fields) : previous_(g_fields) {
  g_fields = &fields;
}
FieldScope::~FieldScope() { g_fields = previous_; }
}  // namespace detail

}  // namespace hsdo::logging
