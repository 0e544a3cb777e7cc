#include "common/python_time.h"

#include <gtest/gtest.h>

namespace hsdo {
namespace {

using namespace std::chrono;

TEST(PythonTime, FormatsLikePythonStrDatetime) {
  const WallTime t = sys_days{2024y / March / 5} + 7h + 8min + 9s + 12345us;
  EXPECT_EQ(FormatPythonDatetime(t), "2024-03-05 07:08:09.012345");
  EXPECT_EQ(FormatPythonDatetime(sys_days{2024y / March / 5}), "2024-03-05 00:00:00.000000");
}

TEST(PythonTime, RoundTrips) {
  const WallTime t = sys_days{2031y / December / 31} + 23h + 59min + 59s + 999999us;
  EXPECT_EQ(ParsePythonDatetime(FormatPythonDatetime(t)), t);
}

TEST(PythonTime, ParsesWithoutFraction) {
  EXPECT_EQ(ParsePythonDatetime("2024-03-05 07:08:09"),
            WallTime{sys_days{2024y / March / 5} + 7h + 8min + 9s});
}

TEST(PythonTime, FreeMarkerAndGarbageAreNotTimes) {
  EXPECT_FALSE(ParsePythonDatetime(kFreeSlotTime).has_value());
  EXPECT_FALSE(ParsePythonDatetime("").has_value());
  EXPECT_FALSE(ParsePythonDatetime("2024-13-05 07:08:09").has_value());
  EXPECT_FALSE(ParsePythonDatetime("2024-03-05 07:08:09.12").has_value());
  EXPECT_FALSE(ParsePythonDatetime("2024-03-05T07:08:09").has_value());
}

// Found by fuzzing: a sign in a field was read as a negative number ("03:04:-5", 5 s before
// 03:04: a DrainingSince of a hand edit began the drain earlier than written).
TEST(PythonTime, ASignInAFieldIsNotATime) {
  for (const char* text :
       {"2024-01-02 03:04:-5", "2024-01-02 -1:-5:-9.-00001", "2024-01-02 03:04:05.-12345",
        "2024-01-02 03:04:+5", "+024-01-02 03:04:05"}) {
    EXPECT_FALSE(ParsePythonDatetime(text).has_value()) << text;
  }
  EXPECT_TRUE(ParsePythonDatetime("2024-01-02 03:04:05.012345").has_value());
}

// Found in review: years a WallTime cannot hold overflowed its nanoseconds (undefined
// behaviour; Python's datetime.max read back as a date in 1816).
TEST(PythonTime, YearsBeyondWhatAWallTimeHoldsAreNotTimes) {
  EXPECT_FALSE(ParsePythonDatetime("9999-12-31 23:59:59.999999").has_value());
  EXPECT_FALSE(ParsePythonDatetime("0001-01-01 00:00:00").has_value());
  EXPECT_FALSE(ParsePythonDatetime("2262-04-12 00:00:00").has_value());
  for (const char* text : {"1678-01-01 00:00:00.000000", "2261-12-31 23:59:59.999999"}) {
    const auto time = ParsePythonDatetime(text);
    ASSERT_TRUE(time.has_value()) << text;
    EXPECT_EQ(FormatPythonDatetime(*time), text);
  }
}

}  // namespace
}  // namespace hsdo
