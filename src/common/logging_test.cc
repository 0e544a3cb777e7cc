#include "common/logging.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>

#include <spdlog/sinks/ostream_sink.h>

namespace hsdo::logging {
namespace {

constexpr std::int64_t kNoon = 1'700'000'000'123;  // 2023-11-14T22:13:20.123Z

std::size_t Newlines(const std::string& text) {
  return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

TEST(LoggingTest, TextEscapesControlCharactersSoALineStaysOneLine) {
  const std::vector<Field> fields{{"backend", "be\nFAKE"}, {"slot", 3}};
  const auto line = FormatLine(
      {kNoon, spdlog::level::warn, "server web\n2023 ERROR injected\r\t\x01", &fields}, Options{});
  EXPECT_EQ(Newlines(line), 1u) << line;
  EXPECT_EQ(line,
            "2023-11-14T22:13:20.123Z warning server web\\n2023 ERROR injected\\r\\t\\x01 "
            "backend=be\\nFAKE slot=3\n");
}

TEST(LoggingTest, TextQuotesFieldValuesWithSpaces) {
  const std::vector<Field> fields{{"address", "a b"}, {"name", ""}};
  const auto line = FormatLine({kNoon, spdlog::level::info, "m", &fields}, Options{});
  EXPECT_NE(line.find("address=\"a b\" name=\"\""), std::string::npos) << line;
}

TEST(LoggingTest, JsonIsOneObjectPerLineWithFields) {
  const std::vector<Field> fields{{"slot", 4}, {"address", "10.0.0.1"}, {"generation", 7}};
  const auto line = FormatLine({kNoon, spdlog::level::info, "say \"hi\"\n\\ \x7f", &fields},
                               Options{.format = Format::kJson});
  EXPECT_EQ(Newlines(line), 1u);
  EXPECT_EQ(line,
            "{\"time\":\"2023-11-14T22:13:20.123Z\",\"level\":\"info\",\"message\":"
            "\"say \\\"hi\\\"\\n\\\\ \\u007f\",\"slot\":4,\"address\":\"10.0.0.1\","
            "\"generation\":7}\n");
}

TEST(LoggingTest, JournalPrioritiesPrefixEachLine) {
  const Options journal{.journal_priorities = true};
  EXPECT_TRUE(FormatLine({kNoon, spdlog::level::err, "x", nullptr}, journal).starts_with("<3>"));
  EXPECT_TRUE(FormatLine({kNoon, spdlog::level::warn, "x", nullptr}, journal).starts_with("<4>"));
  EXPECT_TRUE(FormatLine({kNoon, spdlog::level::info, "x", nullptr}, journal).starts_with("<6>"));
  EXPECT_TRUE(FormatLine({kNoon, spdlog::level::debug, "x", nullptr}, journal).starts_with("<7>"));
  EXPECT_TRUE(
      FormatLine({kNoon, spdlog::level::info, "x", nullptr}, Options{}).starts_with("2023-"));
}

TEST(LoggingTest, StderrIsJournalOnlyForItsOwnDeviceAndInode) {
  EXPECT_FALSE(StderrIsJournal(""));
  EXPECT_FALSE(StderrIsJournal("garbage"));
  EXPECT_FALSE(StderrIsJournal("1:1"));
}

TEST(LoggingTest, LogPassesFieldsToTheFormatterAndOnlyForThatCall) {
  std::ostringstream out;
  auto logger = std::make_shared<spdlog::logger>(
      "test", std::make_shared<spdlog::sinks::ostream_sink_st>(out));
  logger->set_formatter(MakeFormatter(Options{.format = Format::kJson}));
  const auto previous = spdlog::default_logger();
  spdlog::set_default_logger(logger);
  Log(spdlog::level::info, {{"slot", 3}, {"backend", "be"}}, "slot {} set", 3);
  spdlog::info("plain");
  spdlog::set_default_logger(previous);
  const std::string text = out.str();
  EXPECT_NE(text.find("\"message\":\"slot 3 set\",\"slot\":3,\"backend\":\"be\"}\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("\"message\":\"plain\"}\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace hsdo::logging
