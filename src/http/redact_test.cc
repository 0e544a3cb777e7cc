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

}  // namespace
}  // namespace hsdo::http
