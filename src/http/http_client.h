// HttpClient: the HTTP transport shared by the AWS layer and the Consul source. One
// production implementation on libcurl (CurlHttpClient) and fakes in tests.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace hsdo::http {

using Headers = std::vector<std::pair<std::string, std::string>>;

// The most an answer's body is read (Response::body): a peer that sends without end (a wrong
// address, a broken proxy) fails the request, not the process (found in review: an agent took
// 1.1 GB in a second, an orchestrator ended on std::bad_alloc). The largest a real peer sends:
// a DynamoDB page is at most 1 MB, an etcd range of 100,000 slots ~42 MB, and a Consul
// service's health list 3.6-5.6 KB per instance with verbose check outputs (Consul keeps 4 KB
// of each): ~500 MB at 100,000 instances, HAPROXY_BACKEND_SERVERS_LIST_SIZE's largest. (Review:
// the first limit, 64 MiB, failed such a service from 12,000 instances on.)
inline constexpr std::size_t kMaxBodyBytes = std::size_t{512} << 20;

struct Request {
  std::string method = "GET";
  std::string url;
  Headers headers;
  std::string body;
  std::chrono::milliseconds timeout{10'000};  // whole request
  std::chrono::milliseconds connect_timeout{3'000};
  // When stop is requested on it, a request in flight is abandoned within milliseconds with a
  // kUnavailable error. Lets a long poll (Consul's blocking queries) or a request to a peer
  // that never answers end promptly when its owner shuts down.
  std::stop_token cancel;
  // The most of the answer's body read (kMaxBodyBytes); more fails the request.
  std::size_t max_body_bytes = kMaxBodyBytes;
  // For a streamed answer (etcd's watch): when set, the body goes to this callback chunk by
  // chunk as it arrives instead of into Response::body; returning false ends the request
  // (a kUnavailable error, as a cancel).
  std::function<bool(std::string_view)> on_body;
};

struct Response {
  long status = 0;
  Headers headers;  // names as received
  std::string body;

  // The first header named `name` (case-insensitive), or "" when absent.
  std::string Header(std::string_view name) const;
};

struct TlsOptions {
  std::string ca_file;      // PEM bundle to verify the server with (empty: system default)
  std::string client_cert;  // PEM client certificate, for mutual TLS
  std::string client_key;   // PEM client key
  bool verify_peer = true;
};

class HttpClient {
 public:
  virtual ~HttpClient() = default;
  // Sends one request. Transport failures (refused, timeout, TLS) are kUnavailable errors;
  // any HTTP status, 5xx included, is a Response.
  virtual Result<Response> Send(const Request& request) = 0;
};

// The system's CA bundle files, where Debian and Red Hat keep them.
inline constexpr std::string_view kSystemCaBundles[] = {"/etc/ssl/certs/ca-certificates.crt",
                                                        "/etc/pki/tls/certs/ca-bundle.crt"};

// The one PEM file that verifies servers: `tls.ca_file` when given, else the first of
// kSystemCaBundles that `readable` accepts; "" when there is none (libcurl's defaults then).
// Not libcurl's default of Debian, the directory /etc/ssl/certs, which its GnuTLS build parses
// whole at every connection: each CA three times (its file, its hash link and the bundle),
// about 4 MB of heap for as long as the connection is kept open.
std::string CaFile(const TlsOptions& tls, const std::function<bool(const std::string&)>& readable);

// Whether a client keeps its connection open for the next request.
enum class Connections {
  kKeep,   // for requests every few seconds
  kClose,  // for requests an hour apart: nothing held between them (on TLS, a CA bundle parse)
};

// libcurl, one easy handle reused across requests (keeps connections alive unless kClose).
// Not thread-safe: give each thread its own client. `cancel` ends every request of this
// client, in flight or to come, once stopped (as each request's own Request::cancel does): for
// the owners that cannot set a token per request (the AWS credentials providers).
std::unique_ptr<HttpClient> MakeCurlHttpClient(TlsOptions tls = {}, std::stop_token cancel = {},
                                               Connections connections = Connections::kKeep);

// Percent-encodes everything but RFC 3986 unreserved characters (and '/' with keep_slash),
// with upper-case hex digits, as SigV4 and Consul's query parameters want.
std::string UrlEncode(std::string_view text, bool keep_slash = false);

}  // namespace hsdo::http
