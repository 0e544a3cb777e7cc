// Result<T>: a value or an Error. Errors that input or the network can cause travel as
// values across module boundaries; exceptions from third-party code stop at adapters.
#pragma once

#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace hsdo {

enum class ErrorCode {
  kGeneric,
  kInvalidArgument,  // bad input: config, a file, a store item
  kNotFound,         // a table, a backend, a file that does not exist
  kConflict,         // an optimistic write lost a race (generation moved)
  kUnavailable,      // transport errors, timeouts, 5xx: worth retrying
};

struct Error {
  ErrorCode code = ErrorCode::kGeneric;
  std::string message;
};

template <typename... Args>
Error MakeError(ErrorCode code, fmt::format_string<Args...> format, Args&&... args) {
  return Error{code, fmt::format(format, std::forward<Args>(args)...)};
}

template <typename... Args>
Error MakeError(fmt::format_string<Args...> format, Args&&... args) {
  return Error{ErrorCode::kGeneric, fmt::format(format, std::forward<Args>(args)...)};
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}      // NOLINT: implicit by design
  Result(Error error) : value_(std::move(error)) {}  // NOLINT: implicit by design

  bool ok() const { return std::holds_alternative<T>(value_); }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<T>(value_); }
  const T& value() const& { return std::get<T>(value_); }
  T&& value() && { return std::get<T>(std::move(value_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const { return std::get<Error>(value_); }

 private:
  std::variant<T, Error> value_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT: implicit by design

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_;
  bool ok_ = true;
};

inline Result<void> Ok() { return {}; }

}  // namespace hsdo
