// SigV4 conformance: every case of the AWS signing test suite (header signing), byte for byte.
#include "aws/sigv4.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace hsdo::aws {
namespace {

namespace fs = std::filesystem;

// The suite lives in the repository (tests/testdata/, with its LICENSE and NOTICE).
fs::path SuiteDir() { return fs::path(HSDO_SOURCE_DIR "/tests/testdata/aws-sigv4-test-suite/v4"); }

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// request.txt: "METHOD URI HTTP/1.1", header lines (a line starting with whitespace
// continues the previous value), a blank line, the body.
struct ParsedRequest {
  std::string method, path, query;
  http::Headers headers;
  std::string body;
};

ParsedRequest ParseRequestFile(const std::string& text) {
  ParsedRequest request;
  std::size_t pos = text.find('\n');
  const std::string first = text.substr(0, pos);
  const std::size_t method_end = first.find(' ');
  const std::size_t version_start = first.rfind(' ');
  request.method = first.substr(0, method_end);
  const std::string uri = first.substr(method_end + 1, version_start - method_end - 1);
  const std::size_t q = uri.find('?');
  request.path = uri.substr(0, q);
  if (q != std::string::npos) request.query = uri.substr(q + 1);
  pos = pos == std::string::npos ? text.size() : pos + 1;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty()) {
      if (pos < text.size()) request.body = text.substr(pos);
      break;
    }
    if ((line[0] == ' ' || line[0] == '\t') && !request.headers.empty()) {
      request.headers.back().second += "\n" + line;
      continue;
    }
    const std::size_t colon = line.find(':');
    request.headers.emplace_back(line.substr(0, colon), line.substr(colon + 1));
  }
  return request;
}

WallTime ParseTimestamp(const std::string& iso) {
  std::tm tm{};
  std::istringstream in(iso);
  in >> std::get_time(&tm, "%Y-%m-%dT%H:%M:%SZ");
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

TEST(SigV4Suite, EveryCaseMatchesByteForByte) {
  const fs::path dir = SuiteDir();
  ASSERT_TRUE(fs::is_directory(dir)) << "suite not found at " << dir;
  std::vector<fs::path> cases;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_directory()) cases.push_back(entry.path());
  }
  std::sort(cases.begin(), cases.end());
  ASSERT_GE(cases.size(), 30u);
  int passed = 0;
  SigningKeyCache keys;  // shared by every case, as by an AwsClient's requests
  for (const auto& case_dir : cases) {
    SCOPED_TRACE(case_dir.filename().string());
    const auto context = nlohmann::json::parse(ReadFile(case_dir / "context.json"));
    ParsedRequest parsed = ParseRequestFile(ReadFile(case_dir / "request.txt"));
    Credentials credentials{
        .access_key_id = context["credentials"]["access_key_id"],
        .secret_access_key = context["credentials"]["secret_access_key"],
        .session_token = context["credentials"].value("token", ""),
    };
    SigningParams params{.region = context["region"],
                         .service = context["service"],
                         .time = ParseTimestamp(context["timestamp"]),
                         .normalize_path = context.value("normalize", true),
                         .sign_body = context.value("sign_body", false),
                         .omit_session_token = context.value("omit_session_token", false)};
    SigningRequest request{.method = parsed.method,
                           .path = parsed.path,
                           .query = parsed.query,
                           .headers = parsed.headers,
                           .body = parsed.body};
    SigningRequest again = request;
    const Signature signature = ComputeSignature(request, credentials, params);
    // With the signing key kept between requests: the same signature.
    EXPECT_EQ(ComputeSignature(again, credentials, params, &keys).signature, signature.signature);
    const bool ok =
        signature.canonical_request == ReadFile(case_dir / "header-canonical-request.txt") &&
        signature.string_to_sign == ReadFile(case_dir / "header-string-to-sign.txt") &&
        signature.signature == ReadFile(case_dir / "header-signature.txt");
    EXPECT_EQ(signature.canonical_request, ReadFile(case_dir / "header-canonical-request.txt"));
    EXPECT_EQ(signature.string_to_sign, ReadFile(case_dir / "header-string-to-sign.txt"));
    EXPECT_EQ(signature.signature, ReadFile(case_dir / "header-signature.txt"));
    // The signed request's Authorization line carries the same value.
    EXPECT_NE(ReadFile(case_dir / "header-signed-request.txt")
                  .find("Authorization:" + signature.authorization),
              std::string::npos);
    if (ok) ++passed;
  }
  EXPECT_EQ(passed, static_cast<int>(cases.size()));
  std::printf("SigV4 suite: %d of %zu cases pass\n", passed, cases.size());
}

TEST(SigV4, SigningKeyCacheDerivesAgainWhenTheDayOrTheSecretChanges) {
  SigningKeyCache keys;
  const std::string day1 = keys.Get("secret", "20261130", "us-east-1", "dynamodb");
  EXPECT_EQ(day1, DeriveSigningKey("secret", "20261130", "us-east-1", "dynamodb"));
  EXPECT_EQ(keys.Get("secret", "20261130", "us-east-1", "dynamodb"), day1);
  EXPECT_EQ(keys.Get("secret", "20261201", "us-east-1", "dynamodb"),
            DeriveSigningKey("secret", "20261201", "us-east-1", "dynamodb"));
  EXPECT_NE(keys.Get("secret", "20261201", "us-east-1", "dynamodb"), day1);
  EXPECT_EQ(keys.Get("rotated", "20261201", "us-east-1", "dynamodb"),
            DeriveSigningKey("rotated", "20261201", "us-east-1", "dynamodb"));
  EXPECT_EQ(keys.Get("rotated", "20261201", "eu-west-1", "sts"),
            DeriveSigningKey("rotated", "20261201", "eu-west-1", "sts"));
}

TEST(SigV4, CanonicalPathNormalisation) {
  EXPECT_EQ(CanonicalPath("", true), "/");
  EXPECT_EQ(CanonicalPath("/a/./b/../c", true), "/a/c");
  EXPECT_EQ(CanonicalPath("/a/b/..", true), "/a/");
  EXPECT_EQ(CanonicalPath("//a//", false), "//a//");
  EXPECT_EQ(CanonicalPath("/a%2Fb", false), "/a%252Fb");  // double encoding, non-S3
}

TEST(SigV4, CanonicalQuerySortsAndEncodes) {
  EXPECT_EQ(CanonicalQuery("b=2&a=1&a=0"), "a=0&a=1&b=2");
  EXPECT_EQ(CanonicalQuery("k"), "k=");
  EXPECT_EQ(CanonicalQuery("x=a+b&y=a%20b"), "x=a%2Bb&y=a%20b");
}

TEST(SigV4, SignRequestSetsHostDateAndToken) {
  http::Request request{.method = "POST",
                        .url = "http://127.0.0.1:4566/",
                        .headers = {{"Content-Type", "application/x-amz-json-1.0"}},
                        .body = "{}"};
  SignRequest(request,
              {.access_key_id = "AKID", .secret_access_key = "SECRET", .session_token = "TOKEN"},
              {.region = "eu-west-1", .service = "dynamodb", .time = WallTime{}});
  auto find = [&](std::string_view name) {
    for (const auto& [k, v] : request.headers) {
      if (k == name) return v;
    }
    return std::string();
  };
  EXPECT_EQ(find("Host"), "127.0.0.1:4566");
  EXPECT_EQ(find("X-Amz-Date"), "19700101T000000Z");
  EXPECT_EQ(find("X-Amz-Security-Token"), "TOKEN");
  EXPECT_TRUE(find("Authorization")
                  .starts_with("AWS4-HMAC-SHA256 Credential=AKID/19700101/eu-west-1/dynamodb/"
                               "aws4_request, SignedHeaders=content-type;host;x-amz-date;"
                               "x-amz-security-token, Signature="));
}

TEST(SigV4, ParseUrl) {
  auto url = ParseUrl("https://dynamodb.eu-west-1.amazonaws.com");
  ASSERT_TRUE(url);
  EXPECT_EQ(url->host, "dynamodb.eu-west-1.amazonaws.com");
  EXPECT_EQ(url->path, "/");
  url = ParseUrl("http://[::1]:8080/x?y=1");
  ASSERT_TRUE(url);
  EXPECT_EQ(url->hostname, "::1");
  EXPECT_EQ(url->host, "[::1]:8080");
  EXPECT_EQ(url->query, "y=1");
  EXPECT_FALSE(ParseUrl("no-scheme"));
}

}  // namespace
}  // namespace hsdo::aws
