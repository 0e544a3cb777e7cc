// Test double for http::HttpClient: answers from a handler and records every request.
#pragma once

#include <functional>
#include <mutex>
#include <vector>

#include "aws/credentials.h"
#include "common/clock.h"
#include "http/http_client.h"

namespace hsdo::aws::testing {

class FakeHttpClient final : public http::HttpClient {
 public:
  using Handler = std::function<Result<http::Response>(const http::Request&)>;
  explicit FakeHttpClient(Handler handler) : handler_(std::move(handler)) {}

  Result<http::Response> Send(const http::Request& request) override {
    std::lock_guard lock(mutex_);
    requests_.push_back(request);
    return handler_(request);
  }
  std::vector<http::Request> requests() const {
    std::lock_guard lock(mutex_);
    return requests_;
  }

 private:
  mutable std::mutex mutex_;
  Handler handler_;
  std::vector<http::Request> requests_;
};

// Credentials that are always there (the environment provider over a fixed key pair).
inline std::shared_ptr<CredentialsChain> FixedCredentials(const Clock& clock) {
  AwsConfig config;
  config.access_key_id = "AKID";
  config.secret_access_key = "SECRET";
  std::vector<std::unique_ptr<CredentialsProvider>> providers;
  providers.push_back(MakeEnvironmentProvider(config));
  return std::make_shared<CredentialsChain>(std::move(providers), clock);
}

inline http::Response Reply(long status, std::string body) {
  return http::Response{.status = status, .headers = {}, .body = std::move(body)};
}

inline std::string HeaderOf(const http::Request& request, std::string_view name) {
  for (const auto& [key, value] : request.headers) {
    if (key.size() == name.size() &&
        std::equal(key.begin(), key.end(), name.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      return value;
    }
  }
  return {};
}

}  // namespace hsdo::aws::testing
