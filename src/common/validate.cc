#include "common/validate.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>

#include <fmt/format.h>

namespace hsdo {

std::optional<std::string> CanonicalIp(std::string_view text) {
  // A NUL inside would end the text inet_pton reads: "1.2.3.4\0junk" is not an address.
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN || text.find('\0') != text.npos) {
    return std::nullopt;
  }
  std::array<char, INET6_ADDRSTRLEN> input{};  // NUL-terminated for inet_pton
  std::copy(text.begin(), text.end(), input.begin());
  std::array<unsigned char, sizeof(in6_addr)> binary{};
  std::array<char, INET6_ADDRSTRLEN> out{};
  if (inet_pton(AF_INET, input.data(), binary.data()) == 1) {
    // What inet_ntop writes for AF_INET, without its printf: an agent canonicalizes every
    // slot's address twice at each full read of HAProxy's state.
    std::string canonical;
    for (int i = 0; i < 4; ++i) {
      if (i > 0) canonical += '.';
      const unsigned octet = binary[i];
      if (octet >= 100) canonical += static_cast<char>('0' + octet / 100);
      if (octet >= 10) canonical += static_cast<char>('0' + octet / 10 % 10);
      canonical += static_cast<char>('0' + octet % 10);
    }
    return canonical;
  }
  if (inet_pton(AF_INET6, input.data(), binary.data()) == 1) {
    if (inet_ntop(AF_INET6, binary.data(), out.data(), out.size()) == nullptr) return std::nullopt;
    return std::string(out.data());
  }
  return std::nullopt;
}

namespace {

bool IsServableIpv4(const unsigned char* octets) {
  if (octets[0] == 0 || (octets[0] >= 224 && octets[0] < 240)) return false;  // 0/8, multicast
  if (octets[0] == 169 && octets[1] == 254) return false;  // link-local: the cloud's metadata
  return !(octets[0] == 255 && octets[1] == 255 && octets[2] == 255 && octets[3] == 255);
}

// fe80::/10, and AWS's metadata, DNS and time servers at fd00:ec2::254, ::253 and ::123.
bool IsLinkLocalOrMetadataIpv6(const unsigned char* bytes) {
  if (bytes[0] == 0xfe && (bytes[1] & 0xc0) == 0x80) return true;
  static constexpr std::array<unsigned char, 14> kAwsServices = {0xfd, 0x00, 0x0e, 0xc2};
  return std::equal(kAwsServices.begin(), kAwsServices.end(), bytes);
}

}  // namespace

std::optional<std::string> TargetAddress(std::string_view text) {
  auto canonical = CanonicalIp(text);
  if (!canonical) return std::nullopt;
  std::array<unsigned char, sizeof(in6_addr)> binary{};
  if (!IsIpv6(*canonical)) {
    inet_pton(AF_INET, canonical->c_str(), binary.data());
    return IsServableIpv4(binary.data()) ? canonical : std::nullopt;
  }
  inet_pton(AF_INET6, canonical->c_str(), binary.data());
  const auto* address = reinterpret_cast<const in6_addr*>(binary.data());
  if (IN6_IS_ADDR_UNSPECIFIED(address) || IN6_IS_ADDR_MULTICAST(address) ||
      IsLinkLocalOrMetadataIpv6(binary.data())) {
    return std::nullopt;
  }
  if (IN6_IS_ADDR_V4MAPPED(address)) {
    // The IPv4 address it maps, as a target's address: one endpoint, one slot (IPv6 review:
    // 127.0.0.1:P and ::ffff:127.0.0.1:P took two slots, the server twice on every ring).
    if (!IsServableIpv4(binary.data() + 12)) return std::nullopt;
    return CanonicalIp(fmt::format("{}.{}.{}.{}", binary[12], binary[13], binary[14], binary[15]));
  }
  return canonical;
}

bool IsIpv6(std::string_view canonical_ip) {
  return canonical_ip.find(':') != std::string_view::npos;
}

bool IsValidHaproxyName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == ':' || c == '-';
  });
}

namespace {

constexpr std::size_t kMaxLabelLength = 255;

bool IsPrintableAscii(char c) { return c >= ' ' && c < 127; }

}  // namespace

bool IsValidLabel(std::string_view label) {
  if (label.empty() || label.size() > kMaxLabelLength) return false;
  return std::all_of(label.begin(), label.end(), IsPrintableAscii);
}

std::string SanitizedLabel(std::string_view label) {
  std::string text(label.substr(0, kMaxLabelLength));
  std::replace_if(
      text.begin(), text.end(), [](char c) { return !IsPrintableAscii(c); }, '?');
  return text;
}

bool IsValidNodeName(std::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return c > ' ' && c < 127; });
}

}  // namespace hsdo
