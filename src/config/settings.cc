// THE SETTINGS TABLE: every variable hsdo reads, in one place. Loading (config.cc), aliases,
// unknown-name warnings, --help, `hsdo config` and the test that conf/env.yaml lists every
// entry all come from kTable below.
//
// To add a variable: add its Config field (config.h), then ONE line to kTable:
//   {"NAME", SettingRole::kServer, "default as env.yaml writes it", Kind(HSDO_FIELD(field)),
//    "One-line doc."},
// with the kind that parses it (Text, List, Integer, Seconds, Number, Boolean, Choice, Url,
// ReadableFile, ...), optional aliases ({"OTHER_NAME"}) and flags (kSecret, kEnvironmentOnly),
// and the same NAME: default to conf/env.yaml (config_test checks that they match).
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <type_traits>
#include <utility>

#include <fmt/format.h>

#include "common/validate.h"
#include "config/settings.h"

namespace hsdo::config_detail {
namespace {

// A reference to one Config member, for const and non-const Configs alike.
#define HSDO_FIELD(member) \
  [](auto& c) -> auto& { return c.member; }

using Expected = std::optional<std::string>;

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string JoinList(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ",") + item;
  return out;
}

template <typename F>
Kind Text(F field) {
  return {[field](std::string_view text, Config& c) -> Expected {
            field(c) = std::string(text);
            return std::nullopt;
          },
          [field](const Config& c) { return std::string(field(c)); }};
}

// A string accepted when `check` returns its canonical form.
template <typename F>
Kind Checked(F field, std::optional<std::string> (*check)(std::string_view),
             std::string_view expected) {
  return {[field, check, expected](std::string_view text, Config& c) -> Expected {
            auto canonical = check(text);
            if (!canonical) return std::string(expected);
            field(c) = std::move(*canonical);
            return std::nullopt;
          },
          [field](const Config& c) { return std::string(field(c)); }};
}

template <typename F>
Kind List(F field) {
  return {[field](std::string_view text, Config& c) -> Expected {
            field(c) = SplitList(text);
            return std::nullopt;
          },
          [field](const Config& c) { return JoinList(field(c)); }};
}

template <typename F>
Kind Integer(F field, long min, long max) {
  return {
      [field, min, max](std::string_view text, Config& c) -> Expected {
        long value = 0;
        const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (ec != std::errc() || ptr != text.data() + text.size() || value < min || value > max) {
          return fmt::format("an integer from {} to {}", min, max);
        }
        field(c) = static_cast<std::remove_reference_t<decltype(field(c))>>(value);
        return std::nullopt;
      },
      [field](const Config& c) { return std::to_string(field(c)); }};
}

template <typename F>
Kind Port(F field) {
  return Integer(field, 1, 65535);
}

// HAPROXY_FALLBACK_BACKEND_SERVER_PORT: unset is 0; printed as the port the fallback gets.
Kind FallbackPort() {
  Kind kind = Port(HSDO_FIELD(fallback_backend_server_port));
  kind.print = [](const Config& c) {
    const auto fallback = c.FallbackBackend();
    return fallback ? std::to_string(fallback->port) : std::string();
  };
  return kind;
}

std::optional<double> ParseNumber(std::string_view text) {
  double value = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size() || !std::isfinite(value)) {
    return std::nullopt;
  }
  return value;
}

enum class Zero { kAllowed, kRejected };

// A duration given in seconds (fractions allowed).
template <typename F>
Kind Seconds(F field, Zero zero) {
  return {[field, zero](std::string_view text, Config& c) -> Expected {
            const auto seconds = ParseNumber(text);
            const bool allow_zero = zero == Zero::kAllowed;
            // A positive value below a millisecond would be read as 0 (a drain timeout of
            // 0 frees a slot at once).
            if (!seconds || *seconds > 86400.0 * 365 || (allow_zero && *seconds < 0) ||
                (*seconds > 0 && *seconds < 0.001) || (!allow_zero && *seconds < 0.001)) {
              return std::string(allow_zero ? "0, or a number of seconds >= 0.001"
                                            : "a positive number of seconds (>= 0.001)");
            }
            field(c) = std::chrono::milliseconds(std::llround(*seconds * 1000));
            return std::nullopt;
          },
          [field](const Config& c) {
            // The shortest text that reads back as the same value ({:g} gave 1.23457e+06).
            return fmt::format("{}", static_cast<double>(field(c).count()) / 1000.0);
          }};
}

template <typename F>
Kind Number(F field, double min, double max) {
  return {[field, min, max](std::string_view text, Config& c) -> Expected {
            const auto value = ParseNumber(text);
            if (!value || *value < min || *value > max) {
              return fmt::format("a number from {} to {}", min, max);
            }
            field(c) = *value;
            return std::nullopt;
          },
          [field](const Config& c) { return fmt::format("{:g}", field(c)); }};
}

template <typename F>
Kind Boolean(F field) {
  return {[field](std::string_view text, Config& c) -> Expected {
            const auto value = Lower(text);
            if (value != "true" && value != "false") return std::string("true or false");
            field(c) = value == "true";
            return std::nullopt;
          },
          [field](const Config& c) { return std::string(field(c) ? "true" : "false"); }};
}

// As the AWS SDKs read their flags: "true" in any case is true, anything else false.
template <typename F>
Kind SdkFlag(F field) {
  return {[field](std::string_view text, Config& c) -> Expected {
            field(c) = Lower(text) == "true";
            return std::nullopt;
          },
          [field](const Config& c) { return std::string(field(c) ? "true" : "false"); }};
}

template <typename F, typename E>
Kind Choice(F field, std::vector<std::pair<std::string_view, E>> choices) {
  std::string expected;
  for (std::size_t i = 0; i < choices.size(); ++i) {
    expected += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ");
    expected += choices[i].first;
  }
  return {[field, choices, expected](std::string_view text, Config& c) -> Expected {
            const auto value = Lower(text);
            for (const auto& [name, choice] : choices) {
              if (value == name) {
                field(c) = choice;
                return std::nullopt;
              }
            }
            return expected;
          },
          [field, choices](const Config& c) {
            for (const auto& [name, choice] : choices) {
              if (field(c) == choice) return std::string(name);
            }
            return std::string();
          }};
}

// An http(s) URL with a host: "http(s)://host[:port][/path]", host a name or an IP literal
// ([...] for IPv6), no user info (a URL must not smuggle credentials or a second host), no
// query or fragment (hsdo appends its own paths to the URL, and a "?token=" would be printed by
// `hsdo config`).
bool IsHttpUrlWithHost(std::string_view url) {
  std::string_view rest;
  if (url.starts_with("http://")) {
    rest = url.substr(7);
  } else if (url.starts_with("https://")) {
    rest = url.substr(8);
  } else {
    return false;
  }
  if (rest.find_first_of("?#") != std::string_view::npos) return false;
  std::string_view authority = rest.substr(0, rest.find('/'));
  if (authority.find('@') != std::string_view::npos) return false;
  std::string_view host = authority;
  std::string_view port;
  if (authority.starts_with('[')) {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return false;
    host = authority.substr(1, close - 1);
    const auto after = authority.substr(close + 1);
    if (!after.empty() && !after.starts_with(':')) return false;
    if (!after.empty()) port = after.substr(1);
    if (!CanonicalIp(host) || !IsIpv6(*CanonicalIp(host))) return false;
  } else {
    if (const auto colon = authority.find(':'); colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
      if (port.empty()) return false;
    }
    if (host.empty() || !std::all_of(host.begin(), host.end(), [](unsigned char ch) {
          return std::isalnum(ch) || ch == '.' || ch == '-' || ch == '_';
        })) {
      return false;
    }
  }
  if (!port.empty()) {
    int number = 0;
    const auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
    if (ec != std::errc() || ptr != port.data() + port.size() || number < 1 || number > 65535) {
      return false;
    }
  }
  return true;
}

constexpr std::string_view kUrlRule = "with a host (no user info, query or fragment)";

std::string WithoutTrailingSlashes(std::string_view url) {
  while (url.ends_with('/')) url.remove_suffix(1);
  return std::string(url);
}

enum class Slash { kKeep, kStrip };

template <typename F>
Kind Url(F field, Slash slash) {
  return {[field, slash](std::string_view text, Config& c) -> Expected {
            if (!IsHttpUrlWithHost(text)) {
              return fmt::format("an http:// or https:// URL {}", kUrlRule);
            }
            field(c) = slash == Slash::kStrip ? WithoutTrailingSlashes(text) : std::string(text);
            return std::nullopt;
          },
          [field](const Config& c) { return std::string(field(c)); }};
}

template <typename F>
Kind UrlList(F field) {
  return {[field](std::string_view text, Config& c) -> Expected {
            std::vector<std::string> urls;
            for (const auto& url : SplitList(text)) {
              if (!IsHttpUrlWithHost(url)) {
                return fmt::format("a comma-separated list of http:// or https:// URLs {}",
                                   kUrlRule);
              }
              urls.push_back(WithoutTrailingSlashes(url));
            }
            field(c) = std::move(urls);
            return std::nullopt;
          },
          [field](const Config& c) { return JoinList(field(c)); }};
}

// A file that hsdo must be able to read (a CA, a certificate, a key), checked at start so a
// typo is a clear error rather than a TLS failure every cycle.
template <typename F>
Kind ReadableFile(F field) {
  return {[field](std::string_view text, Config& c) -> Expected {
            const std::string path(text);
            struct stat st {};
            if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) ||
                access(path.c_str(), R_OK) != 0) {
              return std::string("a readable file");
            }
            field(c) = path;
            return std::nullopt;
          },
          [field](const Config& c) { return std::string(field(c)); }};
}

// Empty: the host name, resolved where the name is used.
std::optional<std::string> NodeName(std::string_view text) {
  if (!text.empty() && !IsValidNodeName(text)) return std::nullopt;
  return std::string(text);
}

std::optional<std::string> HaproxyName(std::string_view text) {
  if (!IsValidHaproxyName(text)) return std::nullopt;
  return std::string(text);
}

// AWS region names ("us-east-1", "us-gov-west-1"): they become part of endpoint host names,
// so nothing but lower-case letters, digits and inner hyphens.
std::optional<std::string> Region(std::string_view text) {
  const bool valid = text.size() >= 2 && text.size() <= 32 &&
                     std::islower(static_cast<unsigned char>(text[0])) && text.back() != '-' &&
                     text.find("--") == std::string_view::npos &&
                     std::all_of(text.begin(), text.end(), [](unsigned char ch) {
                       return std::islower(ch) || std::isdigit(ch) || ch == '-';
                     });
  if (!valid) return std::nullopt;
  return std::string(text);
}

// DynamoDB's rule for table names: 3-255 of [A-Za-z0-9_.-].
std::optional<std::string> TableName(std::string_view text) {
  const bool valid = text.size() >= 3 && text.size() <= 255 &&
                     std::all_of(text.begin(), text.end(), [](unsigned char ch) {
                       return std::isalnum(ch) || ch == '_' || ch == '.' || ch == '-';
                     });
  if (!valid) return std::nullopt;
  return std::string(text);
}

std::optional<std::string> ListenAddress(std::string_view text) { return CanonicalIp(text); }

// HAProxy's stats socket: a unix path (optionally "unix@path") must fit in sun_path;
// ipv4@/ipv6@ addresses are parsed when the agent connects.
std::optional<std::string> SocketPath(std::string_view text) {
  if (text.starts_with("ipv4@") || text.starts_with("ipv6@")) return std::string(text);
  // Another of HAProxy's address prefixes (tcp@, tcp6@, abns@, fd@...) read as a relative path
  // never connects (IPv6 review: "tcp6@[::1]:9999" passed, then every cycle failed).
  if (const auto at = text.find('@');
      at != std::string_view::npos && at > 0 && text.substr(0, at) != "unix" &&
      std::all_of(text.begin(), text.begin() + at,
                  [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; })) {
    return std::nullopt;
  }
  const auto path = text.starts_with("unix@") ? text.substr(5) : text;
  if (path.empty() || path.size() >= sizeof(sockaddr_un{}.sun_path)) return std::nullopt;
  return std::string(text);
}
const std::string kSocketExpected = fmt::format(
    "a unix socket path of at most {} bytes, ipv4@address:port or "
    "ipv6@[address]:port",
    sizeof(sockaddr_un{}.sun_path) - 1);

// HAPROXY_BACKEND_LIST: "backend:base[:port],..." (the loader turns the YAML forms into this).
// Reads HAPROXY_BACKEND_SERVER_PORT, which comes earlier in the table, as the default port.
Kind BackendList() {
  return {[](std::string_view text, Config& c) -> Expected {
            const std::string expected =
                "backend:base_name:port,... (names of [A-Za-z0-9_.-], port 1-65535)";
            std::vector<BackendConfig> backends;
            for (const auto& item : SplitList(text)) {
              std::vector<std::string> parts;
              std::size_t start = 0;
              while (true) {
                const auto colon = item.find(':', start);
                parts.push_back(Trim(std::string_view(item).substr(start, colon - start)));
                if (colon == std::string::npos) break;
                start = colon + 1;
              }
              if (parts.size() < 2 || parts.size() > 3) return expected;
              BackendConfig backend{parts[0], parts[1], c.backend_server_port};
              // ':' is legal in HAProxy names but is the separator here.
              if (!IsValidHaproxyName(backend.name) || !IsValidHaproxyName(backend.base_name)) {
                return expected;
              }
              if (parts.size() == 3) {
                int port = 0;
                const auto& p = parts[2];
                const auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
                if (ec != std::errc() || ptr != p.data() + p.size() || port < 1 || port > 65535) {
                  return expected;
                }
                backend.port = static_cast<std::uint16_t>(port);
              }
              backends.push_back(std::move(backend));
            }
            c.backends = std::move(backends);
            return std::nullopt;
          },
          [](const Config& c) {
            std::vector<std::string> items;
            for (const auto& b : c.backends) {
              items.push_back(fmt::format("{}:{}:{}", b.name, b.base_name, b.port));
            }
            return JoinList(items);
          }};
}

constexpr int kMaxWeight = 256;  // HAProxy's absolute weight range is 0..256
constexpr int kMaxListSize = 100'000;

using R = SettingRole;

// clang-format off
const std::vector<Setting> kTable = {
  // --- Server (orchestrator) ---
  {"SERVER_MODE", R::kServer, "", Choice(HSDO_FIELD(server_mode), std::vector<std::pair<std::string_view, ServerMode>>{{"aws", ServerMode::kAws}, {"consul", ServerMode::kConsul}, {"file", ServerMode::kFile}}), "Where targets come from: aws (Auto Scaling groups), consul, or file."},
  {"SERVER_ASG_NAMES", R::kServer, "", List(HSDO_FIELD(server_asg_names)), "SERVER_MODE=aws: the Auto Scaling groups whose InService, Healthy instances are targets.", {}, kList},
  {"SERVER_FILE_PATH", R::kServer, "", Text(HSDO_FIELD(server_file_path)), "SERVER_MODE=file: a YAML file of targets; re-read on change."},
  {"CONSUL_API_URL", R::kServer, "", Url(HSDO_FIELD(consul.api_url), Slash::kStrip), "SERVER_MODE=consul: Consul's HTTP address.", {"SERVER_CONSUL_API_URL"}, kUrl},
  {"CONSUL_SERVICE_NAME", R::kServer, "", List(HSDO_FIELD(consul.service_names)), "SERVER_MODE=consul: the service name(s) to follow.", {"SERVER_CONSUL_SERVICE_NAME"}, kList},
  {"CONSUL_HTTP_TOKEN", R::kServer, "", Text(HSDO_FIELD(consul.token)), "Consul ACL token (sent as X-Consul-Token; read at start: CONSUL_HTTP_TOKEN_FILE for one that rotates).", {}, kSecret},
  {"CONSUL_HTTP_TOKEN_FILE", R::kServer, "", Text(HSDO_FIELD(consul.token_file)), "A file holding the Consul ACL token, read again at each request: a token rotated in the file is used without a restart (CONSUL_HTTP_TOKEN wins when both are set).", {}, kSecretPath},
  {"CONSUL_CACERT", R::kServer, "", Text(HSDO_FIELD(consul.ca_cert)), "CA file that signs Consul's certificate (must be readable when --server starts with SERVER_MODE=consul)."},
  {"CONSUL_CLIENT_CERT", R::kServer, "", Text(HSDO_FIELD(consul.client_cert)), "Client certificate file for Consul (mTLS; must be readable when --server starts with SERVER_MODE=consul)."},
  {"CONSUL_CLIENT_KEY", R::kServer, "", Text(HSDO_FIELD(consul.client_key)), "Client key file for Consul (mTLS; must be readable when --server starts with SERVER_MODE=consul)."},
  {"CONSUL_DATACENTER", R::kServer, "", Text(HSDO_FIELD(consul.datacenter)), "Consul datacenter (default: the agent's)."},
  {"CONSUL_SERVICE_TAG", R::kServer, "", Text(HSDO_FIELD(consul.tag)), "Only instances with this tag."},
  {"CONSUL_AZ_META_KEY", R::kServer, "", Text(HSDO_FIELD(consul.az_meta_key)), "Node-meta or service-meta key holding a target's availability zone."},
  {"CONSUL_PASSING_ONLY", R::kServer, "true", Boolean(HSDO_FIELD(consul.passing_only)), "Only instances whose health checks pass."},
  {"HAPROXY_BACKEND_SERVER_MIN_WEIGHT", R::kServer, "1", Integer(HSDO_FIELD(min_weight), 0, kMaxWeight), "Weight of a new target (at 0, one that joins where no slot has a weight starts at 1).", {"SERVER_HAPROXY_BACKEND_SERVER_MIN_WEIGHT"}},
  {"HAPROXY_BACKEND_SERVER_MAX_WEIGHT", R::kServer, "10", Integer(HSDO_FIELD(max_weight), 1, kMaxWeight), "Weight a target ramps up to.", {"SERVER_HAPROXY_BACKEND_SERVER_MAX_WEIGHT"}},
  {"HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT", R::kServer, "1", Integer(HSDO_FIELD(increase_weight), 1, kMaxWeight), "Weight added at each ramp step.", {"SERVER_HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT"}},
  {"HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT_INTERVAL", R::kServer, "30", Seconds(HSDO_FIELD(increase_weight_interval), Zero::kAllowed), "Seconds between two ramp steps.", {"SERVER_HAPROXY_BACKEND_SERVER_INCREASE_WEIGHT_INTERVAL"}},
  {"MAX_REMOVED_FRACTION", R::kServer, "0.5", Number(HSDO_FIELD(max_removed_fraction), 0.0, 1.0), "A plan freeing more than this fraction of enabled slots (with those freed in the last MASS_REMOVAL_DELAY) is held, unless the slots it keeps that most nodes' health checks passed are the rest (a replacement) (1: guard off)."},
  {"REPLACEMENTS_PROVEN_BY_CHECKS", R::kServer, "true", Boolean(HSDO_FIELD(replacements_by_checks)), "A removal held only because of the removals before it in MASS_REMOVAL_DELAY goes through when the slots it keeps passed their health checks on most nodes (a replacement); false for checks sent elsewhere than the target's address and port where HAProxy's state does not show it (tcp-check/http-check connect port or addr, a sidecar)."},
  {"MASS_REMOVAL_DELAY", R::kServer, "60", Seconds(HSDO_FIELD(mass_removal_delay), Zero::kRejected), "Seconds the source must answer the same before a held removal goes through (MAX_REMOVED_FRACTION=1 turns the guard off; 0 is refused)."},
  {"LEADER_LEASE_SECONDS", R::kServer, "10", Seconds(HSDO_FIELD(leader_lease), Zero::kRejected), "A standby orchestrator takes over after the leader's lease is this old."},
  {"NODE_RECORD_EXPIRY", R::kServer, "86400", Seconds(HSDO_FIELD(node_record_expiry), Zero::kAllowed), "Seconds a node's record may go without a report before the leader deletes it (a node replaced or gone; the leader must also have seen it silent for HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT; 0: never)."},
  {"HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT", R::kBoth, "0", Seconds(HSDO_FIELD(drain_timeout), Zero::kAllowed), "Seconds a leaving target drains before its slot is freed (0: at once); on agents, how long a process replaced by a reload is taken to serve when its end cannot be seen (0: 300)."},
  // --- Client (agent) ---
  {"HAPROXY_SOCKET_PATH", R::kClient, "/var/run/haproxy/admin.sock", Checked(HSDO_FIELD(haproxy_socket_path), SocketPath, kSocketExpected), "HAProxy's Runtime API (stats socket at level admin): a unix path, ipv4@host:port or ipv6@[host]:port.", {"CLIENT_HAPROXY_SOCKET_PATH"}},
  {"HAPROXY_BACKEND_NAME", R::kClient, "", Checked(HSDO_FIELD(backend_name), HaproxyName, "an HAProxy name: 1-64 of A-Z a-z 0-9 _ . : -"), "The backend whose server-template slots hsdo fills.", {"CLIENT_HAPROXY_BACKEND_NAME"}},
  {"HAPROXY_BACKEND_BASE_NAME", R::kClient, "", Checked(HSDO_FIELD(backend_base_name), HaproxyName, "an HAProxy name: 1-64 of A-Z a-z 0-9 _ . : -"), "The server-template base name (servers <base>1..<base>N).", {"CLIENT_HAPROXY_BACKEND_BASE_NAME"}},
  {"HAPROXY_BACKEND_SERVER_PORT", R::kBoth, "80", Port(HSDO_FIELD(backend_server_port)), "Port of targets whose source gives none (the orchestrator: a record at this port and the one target at its address without a port are the same server).", {"CLIENT_HAPROXY_BACKEND_SERVER_PORT"}},
  {"HAPROXY_BACKEND_LIST", R::kClient, "", BackendList(), "Several backends: backend:base_name:port,... or a YAML list/mapping; replaces HAPROXY_BACKEND_NAME.", {"CLIENT_HAPROXY_BACKEND_LIST"}},
  {"AZ_LIMITER", R::kClient, "false", Boolean(HSDO_FIELD(az_limiter)), "Targets of other groups than CLIENT_ASG_NAMES go to the fallback backend.", {"CLIENT_DEDICATED_ASG"}},
  {"CLIENT_ASG_NAMES", R::kClient, "", List(HSDO_FIELD(client_asg_names)), "AZ_LIMITER: the groups (ASGs) of this node's AZ.", {}, kList},
  {"HAPROXY_FALLBACK_BACKEND_NAME", R::kClient, "", Checked(HSDO_FIELD(fallback_backend_name), HaproxyName, "an HAProxy name: 1-64 of A-Z a-z 0-9 _ . : -"), "AZ_LIMITER: the fallback backend.", {"CLIENT_HAPROXY_FALLBACK_BACKEND_NAME"}},
  {"HAPROXY_FALLBACK_BACKEND_BASE_NAME", R::kClient, "", Checked(HSDO_FIELD(fallback_backend_base_name), HaproxyName, "an HAProxy name: 1-64 of A-Z a-z 0-9 _ . : -"), "AZ_LIMITER: the fallback backend's server-template base name.", {"CLIENT_HAPROXY_FALLBACK_BACKEND_BASE_NAME"}},
  {"HAPROXY_FALLBACK_BACKEND_SERVER_PORT", R::kClient, "", FallbackPort(), "AZ_LIMITER: port of the fallback's targets whose source gives none (default: the primary backends' when they share one, else HAPROXY_BACKEND_SERVER_PORT).", {"CLIENT_HAPROXY_FALLBACK_BACKEND_SERVER_PORT"}},
  {"ALL_SERVERS_IN_FALLBACK_BACKEND", R::kClient, "false", Boolean(HSDO_FIELD(all_servers_in_fallback_backend)), "AZ_LIMITER: every target in the fallback backend too.", {"CLIENT_ALL_SERVERS_IN_FALLBACK_BACKEND"}},
  {"HAPROXY_FULL_SYNC_INTERVAL", R::kClient, "10", Seconds(HSDO_FIELD(haproxy_full_sync_interval), Zero::kRejected), "Seconds between two full reads of HAProxy's state (repairs hand edits), and of an SQLite store whose watch saw no write."},
  {"HAPROXY_ADMISSION_GATING", R::kClient, "true", Boolean(HSDO_FIELD(admission_gating)), "A newly filled slot gets its weight only once this node's health check passed at its address (backends with `check`)."},
  {"HSDO_NODE_NAME", R::kBoth, "", Checked(HSDO_FIELD(node_name), NodeName, "1-128 printable characters without spaces"), "This node's name in node reports, one of its own (default: the host name)."},
  // --- Both ---
  {"INTERVAL", R::kBoth, "1", Seconds(HSDO_FIELD(interval), Zero::kRejected), "Seconds between two cycles (fractions allowed)."},
  {"HAPROXY_BACKEND_SERVERS_LIST_SIZE", R::kBoth, "10", Integer(HSDO_FIELD(list_size), 1, kMaxListSize), "Number of slots (the N of server-template 1-N)."},
  {"DEBUG", R::kBoth, "false", Boolean(HSDO_FIELD(debug)), "Debug logging."},
  {"LOG_FORMAT", R::kBoth, "text", Choice(HSDO_FIELD(log_format), std::vector<std::pair<std::string_view, LogFormat>>{{"text", LogFormat::kText}, {"json", LogFormat::kJson}}), "Log lines as text, or json (one object per line)."},
  {"EXPORTER_PORT", R::kBoth, "6789", Port(HSDO_FIELD(exporter_port)), "Prometheus exporter port (/metrics, /healthz, /readyz)."},
  {"EXPORTER_ADDRESS", R::kBoth, "0.0.0.0", Checked(HSDO_FIELD(exporter_address), ListenAddress, "an IPv4 or IPv6 address to listen on"), "Address the exporter listens on."},
  {"STORE", R::kBoth, "", Choice(HSDO_FIELD(store), std::vector<std::pair<std::string_view, StoreKind>>{{"dynamodb", StoreKind::kDynamoDb}, {"sqlite", StoreKind::kSqlite}, {"etcd", StoreKind::kEtcd}}), "Where the slot table lives (default: dynamodb when DYNAMODB_TABLE_NAME is set, else sqlite)."},
  {"DYNAMODB_TABLE_NAME", R::kBoth, "", Checked(HSDO_FIELD(dynamodb_table_name), TableName, "a DynamoDB table name: 3-255 of A-Z a-z 0-9 _ . -"), "The DynamoDB table of the slot table."},
  {"AWS_DEFAULT_REGION", R::kBoth, "", Checked(HSDO_FIELD(aws.default_region), Region, "an AWS region name such as us-east-1"), "AWS region (AWS_REGION wins)."},
  {"SQLITE_PATH", R::kBoth, "/var/lib/hsdo/hsdo.db", Text(HSDO_FIELD(sqlite_path)), "STORE=sqlite: the database file."},
  {"ETCD_ENDPOINTS", R::kBoth, "", UrlList(HSDO_FIELD(etcd.endpoints)), "STORE=etcd: etcd v3 endpoints, comma-separated.", {}, kUrl},
  {"ETCD_PREFIX", R::kBoth, "", Text(HSDO_FIELD(etcd.prefix)), "STORE=etcd: key prefix (default /hsdo/<DYNAMODB_TABLE_NAME or default>)."},
  {"ETCD_USERNAME", R::kBoth, "", Text(HSDO_FIELD(etcd.username)), "STORE=etcd: user name."},
  {"ETCD_PASSWORD", R::kBoth, "", Text(HSDO_FIELD(etcd.password)), "STORE=etcd: password (read at start: ETCD_PASSWORD_FILE for one that rotates).", {}, kSecret},
  {"ETCD_PASSWORD_FILE", R::kBoth, "", Text(HSDO_FIELD(etcd.password_file)), "STORE=etcd: a file holding the password, read again at each authentication: a password rotated in the file is used without a restart (ETCD_PASSWORD wins when both are set).", {}, kSecretPath},
  {"ETCD_CACERT", R::kBoth, "", ReadableFile(HSDO_FIELD(etcd.ca_cert)), "STORE=etcd: CA file."},
  {"ETCD_CERT", R::kBoth, "", ReadableFile(HSDO_FIELD(etcd.cert)), "STORE=etcd: client certificate file."},
  {"ETCD_KEY", R::kBoth, "", ReadableFile(HSDO_FIELD(etcd.key)), "STORE=etcd: client key file."},
  {"ETCD_COMPACTION_INTERVAL", R::kServer, "300", Seconds(HSDO_FIELD(etcd.compaction_interval), Zero::kAllowed), "STORE=etcd: seconds between two compactions of etcd's history by the leader, each up to the revision of the one before (0: never, for a cluster compacted by its operator)."},
  // --- The AWS SDK's own variables: environment only ---
  {"AWS_REGION", R::kBoth, "", Checked(HSDO_FIELD(aws.region), Region, "an AWS region name such as us-east-1"), "AWS region.", {}, kEnvironmentOnly},
  {"AWS_ACCESS_KEY_ID", R::kBoth, "", Text(HSDO_FIELD(aws.access_key_id)), "AWS credentials.", {}, kEnvironmentOnly},
  {"AWS_SECRET_ACCESS_KEY", R::kBoth, "", Text(HSDO_FIELD(aws.secret_access_key)), "AWS credentials.", {}, kEnvironmentOnly | kSecret},
  {"AWS_SESSION_TOKEN", R::kBoth, "", Text(HSDO_FIELD(aws.session_token)), "AWS credentials.", {}, kEnvironmentOnly | kSecret},
  {"AWS_PROFILE", R::kBoth, "", Text(HSDO_FIELD(aws.profile)), "Profile of the shared AWS files (default: default).", {}, kEnvironmentOnly},
  {"AWS_SHARED_CREDENTIALS_FILE", R::kBoth, "", Text(HSDO_FIELD(aws.shared_credentials_file)), "Default ~/.aws/credentials.", {}, kEnvironmentOnly},
  {"AWS_CONFIG_FILE", R::kBoth, "", Text(HSDO_FIELD(aws.config_file)), "Default ~/.aws/config.", {}, kEnvironmentOnly},
  {"HOME", R::kBoth, "", Text(HSDO_FIELD(aws.home)), "Where ~/.aws is.", {}, kEnvironmentOnly},
  {"AWS_WEB_IDENTITY_TOKEN_FILE", R::kBoth, "", Text(HSDO_FIELD(aws.web_identity_token_file)), "Web identity (IRSA) token file.", {}, kEnvironmentOnly},
  {"AWS_ROLE_ARN", R::kBoth, "", Text(HSDO_FIELD(aws.role_arn)), "Role to assume with the web identity token.", {}, kEnvironmentOnly},
  {"AWS_ROLE_SESSION_NAME", R::kBoth, "", Text(HSDO_FIELD(aws.role_session_name)), "Session name of the assumed role.", {}, kEnvironmentOnly},
  {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", R::kBoth, "", Text(HSDO_FIELD(aws.container_credentials_relative_uri)), "ECS container credentials.", {}, kEnvironmentOnly | kUrl},
  {"AWS_CONTAINER_CREDENTIALS_FULL_URI", R::kBoth, "", Text(HSDO_FIELD(aws.container_credentials_full_uri)), "Container credentials endpoint.", {}, kEnvironmentOnly | kUrl},
  {"AWS_CONTAINER_AUTHORIZATION_TOKEN", R::kBoth, "", Text(HSDO_FIELD(aws.container_authorization_token)), "Container credentials token.", {}, kEnvironmentOnly | kSecret},
  {"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", R::kBoth, "", Text(HSDO_FIELD(aws.container_authorization_token_file)), "Container credentials token file.", {}, kEnvironmentOnly},
  {"AWS_EC2_METADATA_DISABLED", R::kBoth, "", SdkFlag(HSDO_FIELD(aws.ec2_metadata_disabled)), "true: never ask the EC2 instance metadata service.", {}, kEnvironmentOnly},
  {"AWS_EC2_METADATA_SERVICE_ENDPOINT", R::kBoth, "", Text(HSDO_FIELD(aws.ec2_metadata_service_endpoint)), "Instance metadata service address.", {}, kEnvironmentOnly | kUrl},
  {"AWS_ENDPOINT_URL", R::kBoth, "", Url(HSDO_FIELD(aws.endpoint_url), Slash::kKeep), "Endpoint for every AWS service.", {}, kEnvironmentOnly | kUrl},
  {"AWS_ENDPOINT_URL_DYNAMODB", R::kBoth, "", Url(HSDO_FIELD(aws.endpoint_url_dynamodb), Slash::kKeep), "DynamoDB endpoint.", {}, kEnvironmentOnly | kUrl},
  {"AWS_ENDPOINT_URL_AUTO_SCALING", R::kBoth, "", Url(HSDO_FIELD(aws.endpoint_url_auto_scaling), Slash::kKeep), "Auto Scaling endpoint.", {}, kEnvironmentOnly | kUrl},
  {"AWS_ENDPOINT_URL_EC2", R::kBoth, "", Url(HSDO_FIELD(aws.endpoint_url_ec2), Slash::kKeep), "EC2 endpoint.", {}, kEnvironmentOnly | kUrl},
  {"AWS_ENDPOINT_URL_STS", R::kBoth, "", Url(HSDO_FIELD(aws.endpoint_url_sts), Slash::kKeep), "STS endpoint.", {}, kEnvironmentOnly | kUrl},
  {"AWS_MAX_ATTEMPTS", R::kBoth, "3", Integer(HSDO_FIELD(aws.max_attempts), 1, 20), "Attempts per AWS request (standard retry mode).", {}, kEnvironmentOnly},
  {"AWS_CA_BUNDLE", R::kBoth, "", ReadableFile(HSDO_FIELD(aws.ca_bundle)), "CA bundle (PEM) that verifies the AWS endpoints (default: the profile's ca_bundle, else the system's).", {}, kEnvironmentOnly},
};
// clang-format on

#undef HSDO_FIELD

}  // namespace

const std::vector<Setting>& SettingsTable() { return kTable; }

std::string Trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  const auto last = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(first, last - first + 1));
}

std::vector<std::string> SplitList(std::string_view text) {
  std::vector<std::string> items;
  std::size_t start = 0;
  while (start <= text.size()) {
    const auto comma = text.find(',', start);
    const auto end = comma == std::string_view::npos ? text.size() : comma;
    if (auto item = Trim(text.substr(start, end - start)); !item.empty()) {
      items.push_back(std::move(item));
    }
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return items;
}

}  // namespace hsdo::config_detail
