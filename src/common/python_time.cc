#include "common/python_time.h"

#include <charconv>
#include <chrono>

#include <fmt/format.h>

namespace hsdo {

std::string FormatPythonDatetime(WallTime time) {
  using namespace std::chrono;
  const auto micros = time_point_cast<microseconds>(time);
  const auto day = floor<days>(micros);
  const year_month_day ymd{day};
  const hh_mm_ss hms{micros - day};
  return fmt::format("{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}", static_cast<int>(ymd.year()),
                     static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                     hms.hours().count(), hms.minutes().count(), hms.seconds().count(),
                     hms.subseconds().count());
}

namespace {

// Reads exactly `width` digits at `pos` (or any count when width is 0) into `out`. Digits only:
// from_chars also takes a sign ("2024-01-02 03:04:-5" read as 5 s before 03:04, a drain begun
// earlier than written; found by fuzzing).
bool ReadNumber(std::string_view text, std::size_t& pos, std::size_t width, long& out) {
  const std::size_t end = width == 0 ? text.find_first_not_of("0123456789", pos) : pos + width;
  const std::size_t stop = end == std::string_view::npos ? text.size() : end;
  if (stop > text.size() || stop == pos) return false;
  if (text.substr(pos, stop - pos).find_first_not_of("0123456789") != std::string_view::npos) {
    return false;
  }
  const auto [ptr, ec] = std::from_chars(text.data() + pos, text.data() + stop, out);
  if (ec != std::errc() || ptr != text.data() + stop) return false;
  pos = stop;
  return true;
}

bool Expect(std::string_view text, std::size_t& pos, char c) {
  if (pos >= text.size() || text[pos] != c) return false;
  ++pos;
  return true;
}

}  // namespace

std::optional<WallTime> ParsePythonDatetime(std::string_view text) {
  using namespace std::chrono;
  long y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0, us = 0;
  std::size_t pos = 0;
  if (!ReadNumber(text, pos, 4, y) || !Expect(text, pos, '-') || !ReadNumber(text, pos, 2, mo) ||
      !Expect(text, pos, '-') || !ReadNumber(text, pos, 2, d) || !Expect(text, pos, ' ') ||
      !ReadNumber(text, pos, 2, h) || !Expect(text, pos, ':') || !ReadNumber(text, pos, 2, mi) ||
      !Expect(text, pos, ':') || !ReadNumber(text, pos, 2, s)) {
    return std::nullopt;
  }
  if (pos < text.size()) {
    if (!Expect(text, pos, '.') || !ReadNumber(text, pos, 6, us) || pos != text.size()) {
      return std::nullopt;
    }
  }
  const year_month_day ymd{year{static_cast<int>(y)}, month{static_cast<unsigned>(mo)},
                           day{static_cast<unsigned>(d)}};
  if (!ymd.ok() || h > 23 || mi > 59 || s > 59) return std::nullopt;
  // What a WallTime (nanoseconds since 1970 in 64 bits) holds, 1677-09-21 to 2262-04-11:
  // beyond, the sum overflowed (undefined; "9999-12-31 23:59:59", Python's datetime.max, read
  // as a date in 1816).
  if (y < 1678 || y > 2261) return std::nullopt;
  return WallTime{sys_days{ymd} + hours{h} + minutes{mi} + seconds{s} + microseconds{us}};
}

}  // namespace hsdo
