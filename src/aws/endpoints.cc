#include "aws/endpoints.h"

#include <unistd.h>

#include "aws/profile.h"

namespace hsdo::aws {

std::string ResolveRegion(const AwsConfig& config) {
  if (!config.region.empty()) return config.region;
  if (!config.default_region.empty()) return config.default_region;
  const auto profile = LoadProfile(config);
  if (auto it = profile.find("region"); it != profile.end()) return it->second;
  return {};
}

Result<std::string> ResolveEndpoint(const AwsConfig& config, const Service& service,
                                    std::string_view region) {
  std::string url;
  if (service.endpoint_prefix == kDynamoDb.endpoint_prefix) url = config.endpoint_url_dynamodb;
  if (service.endpoint_prefix == kAutoScaling.endpoint_prefix) {
    url = config.endpoint_url_auto_scaling;
  }
  if (service.endpoint_prefix == kEc2.endpoint_prefix) url = config.endpoint_url_ec2;
  if (service.endpoint_prefix == kSts.endpoint_prefix) url = config.endpoint_url_sts;
  if (url.empty()) url = config.endpoint_url;
  if (url.empty()) {
    if (region.empty()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "no AWS region for {}: set AWS_REGION or AWS_DEFAULT_REGION, or a region "
                       "in the profile",
                       service.signing_name);
    }
    url = "https://" + std::string(service.endpoint_prefix) + "." + std::string(region) +
          ".amazonaws.com";
  }
  while (url.ends_with('/')) url.pop_back();
  if (!url.starts_with("http://") && !url.starts_with("https://")) {
    return MakeError(ErrorCode::kInvalidArgument, "endpoint URL for {} is not http(s): {}",
                     service.signing_name, url);
  }
  return url;
}

Result<std::string> ResolveCaBundle(const AwsConfig& config) {
  if (!config.ca_bundle.empty()) return config.ca_bundle;
  const auto profile = LoadProfile(config);
  const auto it = profile.find("ca_bundle");
  if (it == profile.end() || it->second.empty()) return std::string();
  if (::access(it->second.c_str(), R_OK) != 0) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "the ca_bundle of AWS profile '{}' is not a readable file: {}",
                     ProfileName(config), it->second);
  }
  return it->second;
}

}  // namespace hsdo::aws
