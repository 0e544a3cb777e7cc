#include "http/http_client.h"

#include <gtest/gtest.h>

namespace hsdo::http {
namespace {

TEST(UrlEncode, KeepsUnreservedOnly) {
  EXPECT_EQ(UrlEncode("AZaz09-_.~"), "AZaz09-_.~");
  EXPECT_EQ(UrlEncode("a b/c=d&e"), "a%20b%2Fc%3Dd%26e");
  EXPECT_EQ(UrlEncode("\xC3\xA9"), "%C3%A9");
}

TEST(Response, HeaderLookupIgnoresCase) {
  Response response;
  response.headers = {{"X-Consul-Index", "42"}, {"Content-Type", "application/json"}};
  EXPECT_EQ(response.Header("x-consul-index"), "42");
  EXPECT_EQ(response.Header("missing"), "");
}

TEST(CurlHttpClient, RefusedConnectionIsUnavailable) {
  auto client = MakeCurlHttpClient();
  // Port 1 on loopback: nothing listens there.
  auto result = client->Send({.url = "http://127.0.0.1:1/x?token=secret"});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(result.error().message.find("secret"), std::string::npos);
}

}  // namespace
}  // namespace hsdo::http
