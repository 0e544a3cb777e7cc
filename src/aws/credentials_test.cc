#include "aws/credentials.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "aws/asg_source.h"
#include "aws/dynamodb_store.h"
#include "aws/endpoints.h"
#include "aws/profile.h"
#include "aws/testing/counting_provider.h"
#include "aws/testing/fake_http_client.h"
#include "aws/testing/loopback_http_server.h"

namespace hsdo::aws {
namespace {

namespace fs = std::filesystem;
using testing::CountingProvider;
using testing::FakeHttpClient;
using testing::HeaderOf;
using testing::Reply;

class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/hsdo-aws-XXXXXX";
    path_ = ::mkdtemp(pattern);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string Write(const std::string& name, const std::string& text) const {
    const fs::path file = path_ / name;
    fs::create_directories(file.parent_path());
    std::ofstream(file) << text;
    return file.string();
  }
  std::string path() const { return path_.string(); }

 private:
  fs::path path_;
};

// Every test config starts with the metadata service off and no home directory files.
AwsConfig BaseConfig() {
  AwsConfig config;
  config.ec2_metadata_disabled = true;
  config.home = "/nonexistent-hsdo-home";
  return config;
}

const std::string kJsonCredentials = R"({"Code":"Success","AccessKeyId":"ASIATEMP",
  "SecretAccessKey":"tempsecret","Token":"temptoken","Expiration":"2030-01-01T00:00:00Z"})";

TEST(Iso8601, Parses) {
  auto t = ParseIso8601("2030-01-01T00:00:00Z");
  ASSERT_TRUE(t);
  EXPECT_EQ(std::chrono::duration_cast<std::chrono::seconds>(t->time_since_epoch()).count(),
            1893456000);
  EXPECT_EQ(ParseIso8601("2030-01-01T00:00:00.123Z"), t);
  EXPECT_EQ(ParseIso8601("2030-01-01T00:00:00+00:00"), t);
  EXPECT_FALSE(ParseIso8601("2030-01-01"));
  EXPECT_FALSE(ParseIso8601("2030-13-01T00:00:00Z"));
  // Beyond what a WallTime holds: the same far future, not an overflow into the past.
  const auto never = ParseIso8601("9999-12-31T23:59:59Z");
  ASSERT_TRUE(never);
  EXPECT_GT(*never, *ParseIso8601("2200-01-01T00:00:00Z"));
  const auto ancient = ParseIso8601("0001-01-01T00:00:00Z");
  ASSERT_TRUE(ancient);
  EXPECT_LT(*ancient, *ParseIso8601("1970-01-01T00:00:00Z"));
  EXPECT_FALSE(ParseIso8601("2030-01-01T00:00:00+02:00"));
  // Found by fuzzing: sscanf skips blanks and takes signs.
  EXPECT_FALSE(ParseIso8601("2-1-02T\t3:04:2"));
  EXPECT_FALSE(ParseIso8601("2024-01-02T-1:-1:-1Z"));
  EXPECT_FALSE(ParseIso8601(" 2030-01-01T00:00:00Z"));
}

TEST(EnvironmentProvider, UsesKeysAndToken) {
  AwsConfig config = BaseConfig();
  config.access_key_id = "AKID";
  config.secret_access_key = "SECRET";
  config.session_token = "TOKEN";
  auto credentials = MakeEnvironmentProvider(config)->Fetch();
  ASSERT_TRUE(credentials) << credentials.error().message;
  EXPECT_EQ(credentials->access_key_id, "AKID");
  EXPECT_EQ(credentials->session_token, "TOKEN");
  EXPECT_FALSE(credentials->expiration);
}

TEST(EnvironmentProvider, AbsentIsNotFoundAndHalfIsAnError) {
  AwsConfig config = BaseConfig();
  EXPECT_EQ(MakeEnvironmentProvider(config)->Fetch().error().code, ErrorCode::kNotFound);
  config.access_key_id = "AKID";
  auto result = MakeEnvironmentProvider(config)->Fetch();
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, ErrorCode::kInvalidArgument);
}

TEST(Ini, ParsesSectionsCommentsAndNestedSettings) {
  const auto sections = ParseIni(
      "# comment\n[default]\naws_access_key_id = A\n; other\n[profile x]\n"
      "s3 =\n  max_concurrent_requests = 10\nregion=eu-west-3\r\n");
  EXPECT_EQ(sections.at("default").at("aws_access_key_id"), "A");
  EXPECT_EQ(sections.at("profile x").at("region"), "eu-west-3");
  EXPECT_EQ(sections.at("profile x").count("max_concurrent_requests"), 0u);
}

TEST(ProfileProvider, ReadsNamedProfileFromBothFiles) {
  TempDir dir;
  AwsConfig config = BaseConfig();
  config.shared_credentials_file =
      dir.Write("credentials",
                "[default]\naws_access_key_id=DEFAULTKEY\naws_secret_access_key=ds\n"
                "[dev]\naws_access_key_id = DEVKEY\naws_secret_access_key = devsecret\n");
  config.config_file =
      dir.Write("config", "[default]\nregion = us-east-2\n[profile dev]\nregion = eu-west-1\n");
  config.profile = "dev";
  auto credentials = MakeProfileProvider(config)->Fetch();
  ASSERT_TRUE(credentials) << credentials.error().message;
  EXPECT_EQ(credentials->access_key_id, "DEVKEY");
  EXPECT_EQ(credentials->secret_access_key, "devsecret");
  EXPECT_EQ(ResolveRegion(config), "eu-west-1");

  config.profile.clear();
  credentials = MakeProfileProvider(config)->Fetch();
  ASSERT_TRUE(credentials);
  EXPECT_EQ(credentials->access_key_id, "DEFAULTKEY");
  EXPECT_EQ(ResolveRegion(config), "us-east-2");
  config.default_region = "ap-south-1";
  EXPECT_EQ(ResolveRegion(config), "ap-south-1");
  config.region = "sa-east-1";
  EXPECT_EQ(ResolveRegion(config), "sa-east-1");
}

TEST(ProfileProvider, KeysInTheConfigFileAndHomeDefault) {
  TempDir dir;
  dir.Write(".aws/config",
            "[profile ci]\naws_access_key_id=CFGKEY\naws_secret_access_key=s\n"
            "aws_session_token=tok\n");
  AwsConfig config = BaseConfig();
  config.home = dir.path();
  config.profile = "ci";
  auto credentials = MakeProfileProvider(config)->Fetch();
  ASSERT_TRUE(credentials) << credentials.error().message;
  EXPECT_EQ(credentials->access_key_id, "CFGKEY");
  EXPECT_EQ(credentials->session_token, "tok");
  config.profile = "missing";
  EXPECT_EQ(MakeProfileProvider(config)->Fetch().error().code, ErrorCode::kNotFound);
}

TEST(WebIdentityProvider, AssumesRoleThroughStsUnsigned) {
  TempDir dir;
  AwsConfig config = BaseConfig();
  config.web_identity_token_file = dir.Write("token", "eyJ.web.token\n");
  config.role_arn = "arn:aws:iam::123456789012:role/hsdo";
  config.role_session_name = "session-1";
  FakeHttpClient http([](const http::Request&) -> Result<http::Response> {
    return Reply(
        200,
        R"(<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult><Credentials>
    <AccessKeyId>ASIASTS</AccessKeyId><SecretAccessKey>stssecret</SecretAccessKey>
    <SessionToken>ststoken</SessionToken><Expiration>2030-01-01T00:00:00Z</Expiration>
  </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>)");
  });
  FakeClock clock;
  auto credentials = MakeWebIdentityProvider(config, "http://127.0.0.1:9", http, clock)->Fetch();
  ASSERT_TRUE(credentials) << credentials.error().message;
  EXPECT_EQ(credentials->access_key_id, "ASIASTS");
  EXPECT_EQ(credentials->session_token, "ststoken");
  EXPECT_EQ(credentials->expiration, ParseIso8601("2030-01-01T00:00:00Z"));
  const auto requests = http.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].method, "POST");
  EXPECT_EQ(requests[0].url, "http://127.0.0.1:9/");
  EXPECT_NE(requests[0].body.find("Action=AssumeRoleWithWebIdentity"), std::string::npos);
  EXPECT_NE(requests[0].body.find("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fhsdo"),
            std::string::npos);
  EXPECT_TRUE(requests[0].body.ends_with("WebIdentityToken=eyJ.web.token"));
  EXPECT_NE(requests[0].body.find("RoleSessionName=session-1"), std::string::npos);
  EXPECT_EQ(HeaderOf(requests[0], "Authorization"), "");
}

TEST(WebIdentityProvider, StsErrorIsReported) {
  TempDir dir;
  AwsConfig config = BaseConfig();
  config.web_identity_token_file = dir.Write("token", "eyJ.secret.jwt");
  config.role_arn = "arn:aws:iam::1:role/x";
  FakeHttpClient http([](const http::Request&) -> Result<http::Response> {
    return Reply(400,
                 "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>"
                 "<Message>bad token eyJ.secret.jwt</Message></Error></ErrorResponse>");
  });
  FakeClock clock;
  auto result = MakeWebIdentityProvider(config, "http://127.0.0.1:9", http, clock)->Fetch();
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message.find("InvalidIdentityToken"), std::string::npos);
  EXPECT_EQ(result.error().message.find("eyJ.secret.jwt"), std::string::npos);
  config.role_arn.clear();
  EXPECT_EQ(MakeWebIdentityProvider(config, "x", http, clock)->Fetch().error().code,
            ErrorCode::kNotFound);
}

TEST(ContainerProvider, FullUriOnLoopbackWithTokenFile) {
  testing::LoopbackHttpServer server([](const testing::ServerRequest& request) {
    if (request.path != "/creds" || request.Header("authorization") != "Bearer file-token") {
      return testing::ServerResponse{403, "no"};
    }
    return testing::ServerResponse{200, kJsonCredentials};
  });
  TempDir dir;
  AwsConfig config = BaseConfig();
  config.container_credentials_full_uri = server.url() + "/creds";
  config.container_authorization_token = "env-token";
  config.container_authorization_token_file = dir.Write("token", "Bearer file-token\n");
  auto http = http::MakeCurlHttpClient();
  auto credentials = MakeContainerProvider(config, *http)->Fetch();
  ASSERT_TRUE(credentials) << credentials.error().message;
  EXPECT_EQ(credentials->access_key_id, "ASIATEMP");
  EXPECT_EQ(credentials->session_token, "temptoken");
  EXPECT_TRUE(credentials->expiration);
  EXPECT_EQ(server.requests().size(), 1u);
}

TEST(ContainerProvider, RelativeUriGoesToTheEcsHost) {
  // A fake transport: the ECS address is never contacted from a test.
  FakeHttpClient http(
      [](const http::Request&) -> Result<http::Response> { return Reply(200, kJsonCredentials); });
  AwsConfig config = BaseConfig();
  config.container_credentials_relative_uri = "/v2/credentials/abc";
  config.container_authorization_token = "tok";
  auto credentials = MakeContainerProvider(config, http)->Fetch();
  ASSERT_TRUE(credentials) << credentials.error().message;
  ASSERT_EQ(http.requests().size(), 1u);
  EXPECT_EQ(http.requests()[0].url, "http://169.254.170.2/v2/credentials/abc");
  EXPECT_EQ(HeaderOf(http.requests()[0], "Authorization"), "tok");
}

TEST(ContainerProvider, RejectsPlainHttpToOtherHostsAndBadJson) {
  FakeHttpClient http([](const http::Request&) -> Result<http::Response> {
    return Reply(200, R"({"AccessKeyId":"A","SecretAccessKey":"very-secret"})");
  });
  AwsConfig config = BaseConfig();
  config.container_credentials_full_uri = "http://10.0.0.1/creds";
  EXPECT_EQ(MakeContainerProvider(config, http)->Fetch().error().code, ErrorCode::kInvalidArgument);
  EXPECT_TRUE(http.requests().empty());
  EXPECT_EQ(MakeContainerProvider(BaseConfig(), http)->Fetch().error().code, ErrorCode::kNotFound);

  FakeHttpClient broken([](const http::Request&) -> Result<http::Response> {
    return Reply(200, R"({"AccessKeyId":"A","SecretAccessKey":"very-secret", oops)");
  });
  config.container_credentials_full_uri = "http://127.0.0.1:9/creds";
  auto result = MakeContainerProvider(config, broken)->Fetch();
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().message.find("very-secret"), std::string::npos);
}

TEST(ImdsProvider, V2TokenThenRoleThenCredentialsOnLoopback) {
  testing::LoopbackHttpServer server([](const testing::ServerRequest& request) {
    if (request.method == "PUT" && request.path == "/latest/api/token" &&
        request.Header("x-aws-ec2-metadata-token-ttl-seconds") == "21600") {
      return testing::ServerResponse{200, "imds-session-token"};
    }
    if (request.Header("x-aws-ec2-metadata-token") != "imds-session-token") {
      return testing::ServerResponse{401, ""};
    }
    if (request.path == "/latest/meta-data/iam/security-credentials/") {
      return testing::ServerResponse{200, "hsdo-role"};
    }
    if (request.path == "/latest/meta-data/iam/security-credentials/hsdo-role") {
      return testing::ServerResponse{200, kJsonCredentials};
    }
    return testing::ServerResponse{404, ""};
  });
  AwsConfig config = BaseConfig();
  config.ec2_metadata_disabled = false;
  config.ec2_metadata_service_endpoint = server.url() + "/";
  auto http = http::MakeCurlHttpClient();
  auto credentials = MakeImdsProvider(config, *http)->Fetch();
  ASSERT_TRUE(credentials) << credentials.error().message;
  EXPECT_EQ(credentials->access_key_id, "ASIATEMP");
  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[0].method, "PUT");
}

// The role's name goes into the next request's path: only what IAM allows in a role name.
TEST(ImdsProvider, ARoleNameIamWouldRefuseIsNoRole) {
  for (const std::string& role :
       std::vector<std::string>{"a b", "a?b", "a#b", "a%2Fb", "..", std::string(65, 'r')}) {
    FakeHttpClient http([&](const http::Request& request) -> Result<http::Response> {
      if (request.method == "PUT") return Reply(200, "token");
      return Reply(200, role);
    });
    AwsConfig config = BaseConfig();
    config.ec2_metadata_disabled = false;
    config.ec2_metadata_service_endpoint = "http://127.0.0.1:9/";
    auto credentials = MakeImdsProvider(config, http)->Fetch();
    ASSERT_FALSE(credentials) << role;
    EXPECT_EQ(credentials.error().code, ErrorCode::kNotFound) << role;
    EXPECT_EQ(http.requests().size(), 2u) << role;
  }
}

TEST(ImdsProvider, DisabledSendsNothing) {
  FakeHttpClient http(
      [](const http::Request&) -> Result<http::Response> { return Reply(200, ""); });
  AwsConfig config = BaseConfig();
  EXPECT_EQ(MakeImdsProvider(config, http)->Fetch().error().code, ErrorCode::kNotFound);
  EXPECT_TRUE(http.requests().empty());
}

// A chain of the environment provider (not configured: skipped) and a CountingProvider whose
// credentials expire an hour from the clock's start.
struct CountingChain {
  CountingChain() {
    auto provider = std::make_unique<CountingProvider>();
    counting = provider.get();
    counting->expiration = clock.Now() + std::chrono::hours(1);
    std::vector<std::unique_ptr<CredentialsProvider>> providers;
    providers.push_back(MakeEnvironmentProvider(BaseConfig()));
    providers.push_back(std::move(provider));
    chain = std::make_unique<CredentialsChain>(std::move(providers), clock);
  }
  FakeClock clock;
  CountingProvider* counting = nullptr;
  std::unique_ptr<CredentialsChain> chain;
};

TEST(CredentialsChain, CachesAndRefreshesBeforeExpiration) {
  CountingChain fixture;
  FakeClock& clock = fixture.clock;
  CountingProvider* counting = fixture.counting;
  CredentialsChain& chain = *fixture.chain;

  EXPECT_EQ(chain.Get()->access_key_id, "AK1");
  EXPECT_EQ(chain.Get()->access_key_id, "AK1");
  EXPECT_EQ(counting->fetches, 1);
  EXPECT_EQ(chain.source(), "counting");

  clock.Advance(std::chrono::minutes(54));
  EXPECT_EQ(chain.Get()->access_key_id, "AK1");
  clock.Advance(std::chrono::minutes(2));  // inside the 5-minute refresh window
  counting->expiration = clock.Now() + std::chrono::hours(1);
  EXPECT_EQ(chain.Get()->access_key_id, "AK2");

  // A failed refresh keeps the cached credentials while they are still valid...
  clock.Advance(std::chrono::minutes(57));
  counting->fail = true;
  EXPECT_EQ(chain.Get()->access_key_id, "AK2");
  // ...and not after they expired.
  clock.Advance(std::chrono::minutes(4));
  EXPECT_FALSE(chain.Get());
}

// Found in review: in the last minutes before expiry, with the provider failing (STS down), every
// request asked it again (each waiting for its timeout) and logged a warning: 100 requests made
// 101 fetches. A failed refresh is tried again kRefreshRetry later.
TEST(CredentialsChain, AFailedRefreshIsTriedAgainOnlyAfterAWhile) {
  CountingChain fixture;
  FakeClock& clock = fixture.clock;
  CountingProvider* counting = fixture.counting;
  CredentialsChain& chain = *fixture.chain;
  ASSERT_EQ(chain.Get()->access_key_id, "AK1");
  clock.Advance(std::chrono::minutes(56));
  counting->fail = true;
  for (int i = 0; i < 100; ++i) EXPECT_EQ(chain.Get()->access_key_id, "AK1");
  EXPECT_EQ(counting->fetches, 2);
  clock.Advance(CredentialsChain::kRefreshRetry);
  counting->fail = false;
  counting->expiration = clock.Now() + std::chrono::hours(1);
  EXPECT_EQ(chain.Get()->access_key_id, "AK3");
  // Expired, a failing provider is asked at every request: nothing else can serve.
  clock.Advance(std::chrono::minutes(61));
  counting->fail = true;
  EXPECT_FALSE(chain.Get());
  EXPECT_FALSE(chain.Get());
  EXPECT_EQ(counting->fetches, 5);
}

// Review (rotation): a metadata service handing out credentials minutes before they expire was
// asked again at every request (3.5 fetches a second from one orchestrator, for five minutes).
TEST(CredentialsChain, CredentialsDueForARefreshAreFetchedAgainOnlyAfterAWhile) {
  CountingChain fixture;
  fixture.counting->expiration = fixture.clock.Now() + std::chrono::minutes(4);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(fixture.chain->Get()->access_key_id, "AK1");
  EXPECT_EQ(fixture.counting->fetches, 1);
  fixture.clock.Advance(CredentialsChain::kRefreshRetry);
  EXPECT_EQ(fixture.chain->Get()->access_key_id, "AK2");
}

// Review (rotation): keys AWS no longer knows (deleted by the tool that rotated them in the
// credentials file) were used until a restart: only "expired" codes dropped credentials, and
// only temporary ones. Refused ones are asked for again, at most once per kRefreshRetry.
TEST(CredentialsChain, RefusedCredentialsAreAskedForAgainAtMostOnceAWhile) {
  CountingChain fixture;
  CredentialsChain& chain = *fixture.chain;
  fixture.counting->expiration.reset();  // long-term keys
  ASSERT_EQ(chain.Get()->access_key_id, "AK1");
  EXPECT_FALSE(chain.Reject("UnrecognizedClientException", "AK1"));  // just fetched
  EXPECT_EQ(chain.Get()->access_key_id, "AK1");
  fixture.clock.Advance(CredentialsChain::kRefreshRetry);
  EXPECT_TRUE(chain.Reject("UnrecognizedClientException", "AK1"));
  // Another client's request signed with AK1 before: worth a try with what is cached now.
  EXPECT_TRUE(chain.Reject("UnrecognizedClientException", "AK1"));
  EXPECT_EQ(chain.Get()->access_key_id, "AK2");
  EXPECT_TRUE(chain.Reject("UnrecognizedClientException", "AK1"));
  EXPECT_FALSE(chain.Reject("UnrecognizedClientException", "AK2"));
  EXPECT_EQ(chain.Get()->access_key_id, "AK2");
  EXPECT_EQ(fixture.counting->fetches, 2);
}

// Own-commit review: keys from the environment are read once; asking again changed nothing and
// said so every 30 s.
TEST(CredentialsChain, RefusedEnvironmentKeysAreNotAskedForAgain) {
  AwsConfig config = BaseConfig();
  config.access_key_id = "ENVKEY";
  config.secret_access_key = "envsecret";
  std::vector<std::unique_ptr<CredentialsProvider>> providers;
  providers.push_back(MakeEnvironmentProvider(config));
  FakeClock clock;
  CredentialsChain chain(std::move(providers), clock);
  ASSERT_EQ(chain.Get()->access_key_id, "ENVKEY");
  clock.Advance(CredentialsChain::kRefreshRetry);
  EXPECT_FALSE(chain.Reject("UnrecognizedClientException", "ENVKEY"));
}

// Review (rotation): a credentials file read while another tool rewrote it has no keys for a
// moment; the chain went on to the next provider and signed as the instance's role for hours.
TEST(CredentialsChain, TheProviderInUseHavingNoneIsAnErrorNotTheNextProvidersIdentity) {
  FakeClock clock;
  auto first = std::make_unique<CountingProvider>();
  auto second = std::make_unique<CountingProvider>();
  CountingProvider* file = first.get();
  CountingProvider* role = second.get();
  file->label = "profile";
  role->label = "ec2-metadata";
  std::vector<std::unique_ptr<CredentialsProvider>> providers;
  providers.push_back(std::move(first));
  providers.push_back(std::move(second));
  CredentialsChain chain(std::move(providers), clock);
  ASSERT_EQ(chain.Get()->access_key_id, "AK1");
  clock.Advance(CredentialsChain::kRefreshRetry);
  ASSERT_TRUE(chain.Reject("InvalidClientTokenId", "AK1"));
  file->absent = true;
  auto none = chain.Get();
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(none.error().message.find("none now"), std::string::npos) << none.error().message;
  EXPECT_EQ(role->fetches, 0);
  file->absent = false;
  EXPECT_EQ(chain.Get()->access_key_id, "AK3");
  EXPECT_EQ(chain.source(), "profile");
}

// Review (rotation): a profile that assumes a role (or runs a process, or signs in with SSO) was
// read as one with no keys: the chain signed as the next provider's identity, the instance's
// role, with a debug line only. Refused when AWS_PROFILE names it and nothing else is set up
// before the instance's role; a warning otherwise (own-commit review: deployments that worked).
TEST(CheckProfileSupported, AProfileWhoseCredentialsHsdoCannotGetIsAConfigurationError) {
  TempDir dir;
  AwsConfig config = BaseConfig();
  config.config_file = dir.Write(
      "config",
      "[default]\nrole_arn = arn:aws:iam::1:role/x\n"
      "[profile ops]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = base\n"
      "[profile upper]\nROLE_ARN = arn:aws:iam::1:role/x\n"
      "[profile proc]\ncredential_process = /bin/get-creds\n"
      "[profile proc-keys]\ncredential_process = /bin/get-creds\naws_access_key_id = K\n"
      "aws_secret_access_key = S\n"
      "[profile sso]\nsso_session = corp\nsso_account_id = 1\n"
      "[profile sso-region]\nsso_region = eu-west-1\n"
      "[profile base]\naws_access_key_id = K\naws_secret_access_key = S\nregion = eu-west-1\n");
  const std::pair<const char*, const char*> refused[] = {{"ops", "role_arn"},
                                                         {"upper", "role_arn"},
                                                         {"proc", "credential_process"},
                                                         {"sso", "sso_account_id"}};
  for (const auto& [profile, key] : refused) {
    config.profile = profile;
    auto checked = CheckProfileSupported(config);
    ASSERT_FALSE(checked) << profile;
    EXPECT_EQ(checked.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(checked.error().message.find(fmt::format("'{}' (AWS_PROFILE", profile)),
              std::string::npos)
        << checked.error().message;
    EXPECT_NE(checked.error().message.find(fmt::format("sets {} and no keys", key)),
              std::string::npos)
        << checked.error().message;
  }
  for (const char* profile : {"", "base", "proc-keys", "sso-region", "none-such"}) {
    config.profile = profile;
    EXPECT_TRUE(CheckProfileSupported(config)) << profile;
  }
  config.profile = "ops";  // web identity set up: the chain gets there before the instance
  config.role_arn = "arn:aws:iam::1:role/web";
  config.web_identity_token_file = "/var/run/token";
  EXPECT_TRUE(CheckProfileSupported(config));
  config.role_arn.clear();
  config.container_credentials_relative_uri = "/v2/credentials/x";
  EXPECT_TRUE(CheckProfileSupported(config));
  config.container_credentials_relative_uri.clear();
  config.access_key_id = "ENVKEY";  // keys in the environment come first
  EXPECT_TRUE(CheckProfileSupported(config));
}

// Own-commit review: the check is made where the store and the source make their clients.
TEST(CheckProfileSupported, StopsTheStoreAndTheSourceFromStarting) {
  TempDir dir;
  Config config;
  config.aws = BaseConfig();
  config.aws.region = "eu-west-1";
  config.aws.config_file = dir.Write("config", "[profile ops]\nrole_arn = arn:aws:iam::1:role/x\n");
  config.aws.profile = "ops";
  config.dynamodb_table_name = "hsdo";
  config.server_asg_names = {"web"};
  auto store = MakeDynamoDbStore(config);
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, ErrorCode::kInvalidArgument);
  prometheus::Registry registry;
  auto source = MakeAsgSource(config, registry);
  ASSERT_FALSE(source);
  EXPECT_EQ(source.error().code, ErrorCode::kInvalidArgument);
}

TEST(CredentialsChain, EnvironmentWinsOverProfile) {
  TempDir dir;
  AwsConfig config = BaseConfig();
  config.shared_credentials_file =
      dir.Write("credentials", "[default]\naws_access_key_id=FILEKEY\naws_secret_access_key=s\n");
  auto http = std::make_unique<FakeHttpClient>(
      [](const http::Request&) -> Result<http::Response> { return Reply(500, ""); });
  FakeClock clock;
  auto chain = MakeDefaultCredentialsChain(config, clock, std::move(http));
  EXPECT_EQ(chain->Get()->access_key_id, "FILEKEY");
  config.access_key_id = "ENVKEY";
  config.secret_access_key = "envsecret";
  chain = MakeDefaultCredentialsChain(
      config, clock,
      std::make_unique<FakeHttpClient>(
          [](const http::Request&) -> Result<http::Response> { return Reply(500, ""); }));
  EXPECT_EQ(chain->Get()->access_key_id, "ENVKEY");
}

TEST(CredentialsChain, NothingConfiguredContactsNoEndpoint) {
  auto http = std::make_unique<FakeHttpClient>(
      [](const http::Request&) -> Result<http::Response> { return Reply(500, ""); });
  FakeHttpClient* fake = http.get();
  FakeClock clock;
  auto chain = MakeDefaultCredentialsChain(BaseConfig(), clock, std::move(http));
  auto result = chain->Get();
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, ErrorCode::kNotFound);
  EXPECT_NE(result.error().message.find("environment, profile, web-identity, container"),
            std::string::npos);
  EXPECT_TRUE(fake->requests().empty());
}

TEST(Endpoints, ServiceOverrideThenGlobalThenRegional) {
  AwsConfig config = BaseConfig();
  EXPECT_EQ(*ResolveEndpoint(config, kDynamoDb, "eu-west-1"),
            "https://dynamodb.eu-west-1.amazonaws.com");
  EXPECT_FALSE(ResolveEndpoint(config, kDynamoDb, ""));
  config.endpoint_url = "http://127.0.0.1:5000/";
  EXPECT_EQ(*ResolveEndpoint(config, kEc2, ""), "http://127.0.0.1:5000");
  config.endpoint_url_ec2 = "http://127.0.0.1:6000";
  EXPECT_EQ(*ResolveEndpoint(config, kEc2, ""), "http://127.0.0.1:6000");
  EXPECT_EQ(*ResolveEndpoint(config, kAutoScaling, ""), "http://127.0.0.1:5000");
}

TEST(Endpoints, CaBundleFromTheEnvironmentElseTheProfileElseTheSystem) {
  TempDir dir;
  AwsConfig config = BaseConfig();
  EXPECT_EQ(*ResolveCaBundle(config), "");  // libcurl's default: the system's CAs
  const std::string profile_ca = dir.Write("profile-ca.pem", "x");
  config.config_file =
      dir.Write("config", "[default]\nca_bundle = " + profile_ca +
                              "\n[profile typo]\nca_bundle = " + dir.path() + "/nope.pem\n");
  EXPECT_EQ(*ResolveCaBundle(config), profile_ca);
  config.ca_bundle = dir.Write("env-ca.pem", "x");  // AWS_CA_BUNDLE
  EXPECT_EQ(*ResolveCaBundle(config), config.ca_bundle);

  // A profile naming a file that is not there is an error naming the profile, not a
  // silent fall back to the system's CAs.
  config.ca_bundle.clear();
  config.profile = "typo";
  auto missing = ResolveCaBundle(config);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(missing.error().message.find("'typo'"), std::string::npos) << missing.error().message;
  EXPECT_NE(missing.error().message.find("nope.pem"), std::string::npos);
}

}  // namespace
}  // namespace hsdo::aws
