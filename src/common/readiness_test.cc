#include "common/readiness.h"

#include <gtest/gtest.h>

namespace hsdo {
namespace {

using namespace std::chrono_literals;

TEST(Readiness, KeepsOneLineOfText) {
  Readiness readiness;
  EXPECT_EQ(readiness.Reason(), "starting");
  readiness.Set("store\nnot found");
  EXPECT_EQ(readiness.Reason(), "store not found");
}

// Found in review: an agent whose loop never ended a cycle again kept its last "ready" (and
// /healthz its 200) for ever; the orchestrator's health already went stale.
TEST(Readiness, AReasonNotSetForTooLongSaysTheLoopIsStuck) {
  Readiness readiness;
  readiness.Set("");
  const auto now = std::chrono::steady_clock::now();
  EXPECT_FALSE(readiness.Stale(now, 33s));
  EXPECT_EQ(readiness.Reason(now, 33s), "");
  EXPECT_TRUE(readiness.Stale(now + 34s, 33s));
  EXPECT_EQ(readiness.Reason(now + 40s, 33s), "no cycle ended in the last 40 s (stuck?)");
  readiness.Set("");  // the next cycle ends
  EXPECT_EQ(readiness.Reason(std::chrono::steady_clock::now(), 33s), "");
}

}  // namespace
}  // namespace hsdo
