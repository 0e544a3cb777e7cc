#include "http/redact.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace hsdo::http {
namespace {

TEST(RedactSecretsTest, RemovesEveryOccurrenceOfEachSecret) {
  const std::vector<std::string> secrets = {"s3cr3t-token", "AKIDSIGNATURE"};
  EXPECT_EQ(RedactSecrets("bad token s3cr3t-token (s3cr3t-token) sig=AKIDSIGNATURE", secrets),
            "bad token <redacted> (<redacted>) sig=<redacted>");
}

TEST(RedactSecretsTest, IgnoresShortAndEmptySecrets) {
  const std::vector<std::string> secrets = {"", "abc"};
  EXPECT_EQ(RedactSecrets("abc def", secrets), "abc def");
}

TEST(RedactSecretsTest, ASecretContainingTheMarkerDoesNotLoop) {
  const std::vector<std::string> secrets = {"<redacted>"};
  EXPECT_EQ(RedactSecrets("x <redacted> y", secrets), "x <redacted> y");
}

TEST(RedactSecretsTest, OneLineAndBounded) {
  const std::vector<std::string> none;
  EXPECT_EQ(RedactSecrets("a\r\nb\tc\x1b", none), "a  b c ");
  const std::string long_text(kMaxRedactedText + 50, 'x');
  EXPECT_EQ(RedactSecrets(long_text, none), std::string(kMaxRedactedText, 'x') + "...");
}

TEST(RedactSecretsTest, ASecretAcrossTheCutIsRemovedFirst) {
  const std::string secret = "0123456789abcdef";
  const std::string text = std::string(kMaxRedactedText - 4, 'x') + secret;
  const std::vector<std::string> secrets = {secret};
  EXPECT_EQ(RedactSecrets(text, secrets).find("0123"), std::string::npos);
}

// Security review: a URL's user info (AWS_EC2_METADATA_SERVICE_ENDPOINT=http://u:pw@host)
// reached the error of a failed request; only its query was cut.
TEST(UrlForMessagesTest, NoUserInfoQueryOrFragment) {
  EXPECT_EQ(UrlForMessages("http://u:SeCrEt@127.0.0.1:1/latest/api/token"),
            "http://<hidden: the URL has user info>");
  // Review: "http://u:ab?cd@host/" showed "http://u:ab" (the query cut first).
  for (const char* url : {"http://u:p@ss@host/a@b?token=x#f", "http://u:ab?cd@host/",
                          "http://u:a/b@host/x", "http://u:a#b@host/"}) {
    EXPECT_EQ(UrlForMessages(url), "http://<hidden: the URL has user info>") << url;
  }
  EXPECT_EQ(UrlForMessages("https://host:8500/v1/health/service/web?index=5"),
            "https://host:8500/v1/health/service/web");
  EXPECT_EQ(UrlForMessages("http://host#frag"), "http://host");
  EXPECT_EQ(UrlForMessages("not a url?x"), "not a url");
  EXPECT_EQ(UrlForMessages("u:ab?cd@host"), "<hidden: the URL has user info>");
  EXPECT_EQ(UrlForMessages("u:pw@host:8500/x?next=http://y"), "<hidden: the URL has user info>");
}

}  // namespace
}  // namespace hsdo::http
