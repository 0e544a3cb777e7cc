// Validation of everything that may end up in a HAProxy runtime command (ARCHITECTURE.md,
// invariant 5). A store item or a discovered target passes through these before use.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace hsdo {

// The canonical text of an IPv4 or IPv6 literal ("10.0.0.1", "2001:db8::1"), or nullopt
// for anything else: host names, zone ids, brackets, spaces, separators.
std::optional<std::string> CanonicalIp(std::string_view text);

// CanonicalIp(text), when it is an address a server can have: not unspecified (0.0.0.0/8, ::),
// multicast (224.0.0.0/4, ff00::/8) or the broadcast 255.255.255.255, nor such an IPv4 address
// mapped to IPv6 (240.0.0.0/4 is taken: Linux routes it, some clouds give it to subnets). HAProxy
// takes `addr 0.0.0.0` and then connects to the client's own destination, its own address: the
// slot's traffic would loop back into the node. Nor link-local (169.254.0.0/16, fe80::/10) or
// AWS's fd00:ec2::/112: the instance metadata service lives there (169.254.169.254,
// fd00:ec2::254, ECS's 169.254.170.2), and anyone who may register a Consul service would have
// every HAProxy node forward its clients to its own credentials (security review). Loopback
// stays a server's address: one host's own backends, the demo.
std::optional<std::string> TargetAddress(std::string_view text);

// True for an IPv6 literal (as returned by CanonicalIp).
bool IsIpv6(std::string_view canonical_ip);

// HAProxy identifiers (backend and server names): 1-64 of [A-Za-z0-9_.:-], as HAProxy
// itself accepts in proxy and server names, and nothing that could split a command.
bool IsValidHaproxyName(std::string_view name);

// Free-form labels from a source (target name, group, AZ): 1-255 printable ASCII characters
// (spaces and punctuation too: AWS allows them in group names, and a label never goes into a
// runtime command; log lines quote it, the exporter and JSON escape it).
bool IsValidLabel(std::string_view label);

// `label` made valid for display: each byte that is not printable ASCII becomes '?', and
// it is cut to 255 characters. A store record's label goes through this rather than being
// refused, since a refused record would take its live target out on every node.
std::string SanitizedLabel(std::string_view label);

// A node's name in node reports (HSDO_NODE_NAME, default the host name): 1-128 printable
// ASCII characters without spaces or control characters.
bool IsValidNodeName(std::string_view name);

}  // namespace hsdo
