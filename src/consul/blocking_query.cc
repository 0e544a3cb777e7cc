#include "consul/blocking_query.h"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

namespace hsdo::consul {

std::optional<std::uint64_t> ParseConsulIndex(std::string_view header) {
  while (!header.empty() && header.front() == ' ') header.remove_prefix(1);
  while (!header.empty() && header.back() == ' ') header.remove_suffix(1);
  if (header.empty()) return std::nullopt;
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(header.data(), header.data() + header.size(), value);
  if (error != std::errc{} || end != header.data() + header.size()) return std::nullopt;
  return value;
}

std::uint64_t NextIndex(std::uint64_t sent, std::optional<std::uint64_t> returned) {
  if (!returned) return 0;
  // Zero first: a Consul that keeps answering 0 then blocks on 1 every time, instead of
  // alternating between a reset (0, which does not block) and 1.
  if (*returned == 0) return 1;
  if (*returned < sent) return 0;
  return *returned;
}

std::string FormatWait(std::chrono::milliseconds wait) {
  if (wait.count() % 1000 == 0) return fmt::format("{}s", wait.count() / 1000);
  return fmt::format("{}ms", wait.count());
}

RateLimiter::RateLimiter(int burst, std::chrono::milliseconds interval)
    : interval_(interval), tolerance_(interval * std::max(0, burst - 1)) {}

std::chrono::milliseconds RateLimiter::Reserve(SteadyTime now) {
  // The theoretical arrival time moves by one interval per request; a request may go as long
  // as it is at most `tolerance_` ahead of now (that slack is the burst).
  const SteadyTime arrival = theoretical_arrival_ ? std::max(*theoretical_arrival_, now) : now;
  const SteadyTime allowed_at = arrival - tolerance_;
  theoretical_arrival_ = arrival + interval_;
  if (allowed_at <= now) return std::chrono::milliseconds{0};
  return std::chrono::ceil<std::chrono::milliseconds>(allowed_at - now);
}

Backoff::Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max)
    : initial_(initial), max_(std::max(initial, max)), next_(initial) {}

std::chrono::milliseconds Backoff::Next() {
  const auto delay = next_;
  next_ = std::min(max_, next_ * 2);
  return delay;
}

}  // namespace hsdo::consul
