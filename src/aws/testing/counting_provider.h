// Test double for a CredentialsProvider: counts its fetches and hands out credentials that
// expire at a set time (or fails, while `fail` is set; or has none, while `absent` is set).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "aws/credentials.h"
#include "common/clock.h"

namespace hsdo::aws::testing {

class CountingProvider final : public CredentialsProvider {
 public:
  std::string_view name() const override { return label; }
  Result<Credentials> Fetch() override {
    ++fetches;
    if (fail) return MakeError(ErrorCode::kUnavailable, "down");
    if (absent) return MakeError(ErrorCode::kNotFound, "{}: not configured", label);
    return Credentials{"AK" + std::to_string(fetches), "S", "T", expiration};
  }
  int fetches = 0;
  bool fail = false;
  bool absent = false;
  std::string label = "counting";
  std::optional<WallTime> expiration;
};

}  // namespace hsdo::aws::testing
