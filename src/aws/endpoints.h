// Region and endpoint resolution, as the AWS SDKs do it.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"
#include "config/config.h"

namespace hsdo::aws {

// The services hsdo talks to: the signing name, the endpoint prefix, and the suffix of
// the per-service endpoint variable (AWS_ENDPOINT_URL_<suffix>).
struct Service {
  std::string_view signing_name;
  std::string_view endpoint_prefix;
};
inline constexpr Service kDynamoDb{"dynamodb", "dynamodb"};
inline constexpr Service kAutoScaling{"autoscaling", "autoscaling"};
inline constexpr Service kEc2{"ec2", "ec2"};
inline constexpr Service kSts{"sts", "sts"};

// AWS_REGION, else AWS_DEFAULT_REGION, else the profile's region; "" when none is set.
std::string ResolveRegion(const AwsConfig& config);

// AWS_ENDPOINT_URL_<SERVICE>, else AWS_ENDPOINT_URL, else https://<prefix>.<region>.amazonaws.com
// (without a trailing slash). An error when no region is known and nothing overrides it.
Result<std::string> ResolveEndpoint(const AwsConfig& config, const Service& service,
                                    std::string_view region);

// The PEM bundle that verifies the endpoints' certificates, as the AWS CLI and SDKs choose it:
// AWS_CA_BUNDLE (checked readable when the configuration is read), else the profile's
// ca_bundle; "" for the system's CAs. An error when the profile's file cannot be read.
Result<std::string> ResolveCaBundle(const AwsConfig& config);

}  // namespace hsdo::aws
