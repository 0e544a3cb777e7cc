// Test double for a CredentialsProvider: counts its fetches and hands out credentials that
// expire at a set time (or fails, while `fail` is set).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "aws/credentials.h"
#include "common/clock.h"

namespace hsdo::aws::testing {

class CountingProvider final : public CredentialsProvider {
 public:
  std::string_view name() const override { return "counting"; }
  Result<Credentials> Fetch() override {
    ++fetches;
    if (fail) return MakeError(ErrorCode::kUnavailable, "down");
    return Credentials{"AK" + std::to_string(fetches), "S", "T", expiration};
  }
  int fetches = 0;
  bool fail = false;
  std::optional<WallTime> expiration;
};

}  // namespace hsdo::aws::testing
