#include "common/validate.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace hsdo {
namespace {

TEST(CanonicalIp, AcceptsAndCanonicalisesLiterals) {
  EXPECT_EQ(CanonicalIp("10.0.1.5"), "10.0.1.5");
  EXPECT_EQ(CanonicalIp("::1"), "::1");
  EXPECT_EQ(CanonicalIp("2001:DB8:0:0::1"), "2001:db8::1");
}

// An IPv4 address is written as inet_ntop writes it, whatever the octets.
TEST(CanonicalIp, WritesIpv4AsInetNtopDoes) {
  for (const std::uint32_t address :
       {0x00000000u, 0xFFFFFFFFu, 0x0A000105u, 0x7F000001u, 0x01000000u, 0x000000FFu, 0xC0A80A64u,
        0x08080808u, 0x64400001u}) {
    in_addr binary{.s_addr = htonl(address)};
    char expected[INET_ADDRSTRLEN] = {};
    ASSERT_NE(inet_ntop(AF_INET, &binary, expected, sizeof expected), nullptr);
    EXPECT_EQ(CanonicalIp(expected), expected);
  }
}

TEST(CanonicalIp, RejectsEverythingElse) {
  using namespace std::string_view_literals;
  EXPECT_FALSE(CanonicalIp("1.2.3.4\0junk"sv).has_value());
  for (const char* bad :
       {"", "not-an-ip", "1.2.3.4.5", "1.2.3.4; shutdown sessions server be/s1", "1.2.3.4 ",
        " 1.2.3.4", "[::1]", "fe80::1%eth0", "localhost", "1.2.3.4\n", "256.1.1.1"}) {
    EXPECT_FALSE(CanonicalIp(bad).has_value()) << bad;
  }
}

// Found in review: HAProxy takes `set server be/s addr 0.0.0.0` and then connects to the
// client's own destination, the node itself, so a slot at 0.0.0.0 (a Consul service
// registered on "all interfaces") sent its traffic back into every node.
TEST(TargetAddress, OnlyAddressesAServerCanHave) {
  for (const char* good :
       {"10.0.0.1", "127.0.0.2", "1.0.0.0", "223.255.255.255", "100.64.0.1", "169.253.255.255",
        "169.255.0.1", "240.0.0.5", "255.255.255.254", "2001:db8::1", "::1", "fec0::1", "fe7f::1",
        "fd00:ec2:0:1::254", "fd00:ec3::254"}) {
    EXPECT_EQ(TargetAddress(good), CanonicalIp(good)) << good;
  }
  for (const char* bad :
       {"0.0.0.0", "0.1.2.3", "224.0.0.1", "239.255.255.250", "255.255.255.255", "::", "0::0",
        "ff02::1", "::ffff:0.0.0.0", "::ffff:224.0.0.1", "not-an-ip", ""}) {
    EXPECT_FALSE(TargetAddress(bad).has_value()) << bad;
  }
}

// Security review: a Consul registration at the instance metadata service's address made
// every HAProxy node send clients' requests there (its own credentials, to the internet).
// IPv6 review: an IPv4-mapped address and the IPv4 address it maps took two slots (one
// endpoint, twice on every node's ring). A target's address is the IPv4 one.
TEST(TargetAddress, AnIpv4MappedAddressIsTheIpv4AddressItMaps) {
  EXPECT_EQ(TargetAddress("::ffff:10.0.0.1"), "10.0.0.1");
  EXPECT_EQ(TargetAddress("::FFFF:7f00:1"), "127.0.0.1");
  EXPECT_EQ(TargetAddress("::ffff:100.64.0.1"), "100.64.0.1");
  EXPECT_EQ(TargetAddress("::ffff:0.0.0.0"), std::nullopt);
}

TEST(TargetAddress, NeverTheCloudsMetadataOrAnotherLinkLocalAddress) {
  for (const char* bad : {"169.254.169.254", "169.254.170.2", "169.254.169.253", "169.254.0.1",
                          "169.254.255.255", "::ffff:169.254.169.254", "fe80::1", "febf::1",
                          "fd00:ec2::254", "fd00:ec2::253", "fd00:ec2::123"}) {
    EXPECT_FALSE(TargetAddress(bad).has_value()) << bad;
  }
}

TEST(IsValidHaproxyName, StrictCharacterSet) {
  EXPECT_TRUE(IsValidHaproxyName("http-back"));
  EXPECT_TRUE(IsValidHaproxyName("web_app.1:x"));
  EXPECT_FALSE(IsValidHaproxyName(""));
  EXPECT_FALSE(IsValidHaproxyName("be;shutdown"));
  EXPECT_FALSE(IsValidHaproxyName("be/srv"));
  EXPECT_FALSE(IsValidHaproxyName("a b"));
  EXPECT_FALSE(IsValidHaproxyName(std::string(65, 'a')));
}

TEST(IsValidLabel, TakesPrintableAsciiOnly) {
  EXPECT_TRUE(IsValidLabel("i-0123/eu-west-1a"));
  // AWS allows spaces and punctuation in Auto Scaling group names.
  EXPECT_TRUE(IsValidLabel("web asg; \"blue\" \\ 'green'"));
  EXPECT_FALSE(IsValidLabel(""));
  EXPECT_FALSE(IsValidLabel(std::string(256, 'a')));
  EXPECT_FALSE(IsValidLabel("a\nb"));
  EXPECT_FALSE(IsValidLabel("a\x7f"));
  EXPECT_FALSE(IsValidLabel("caf\xc3\xa9"));
}

TEST(SanitizedLabel, ReplacesWhatIsNotPrintableAndCuts) {
  EXPECT_EQ(SanitizedLabel("web 1"), "web 1");
  EXPECT_EQ(SanitizedLabel("a\r\nb\x1b"), "a??b?");
  EXPECT_EQ(SanitizedLabel("caf\xc3\xa9"), "caf??");
  EXPECT_EQ(SanitizedLabel(std::string(300, 'a')), std::string(255, 'a'));
  EXPECT_TRUE(IsValidLabel(SanitizedLabel("x\ty")));
}

}  // namespace
}  // namespace hsdo
