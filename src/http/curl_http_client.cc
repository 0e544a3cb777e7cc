#include <curl/curl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <mutex>
#include <optional>
#include <stop_token>

#include "common/shared_library.h"
#include "http/http_client.h"
#include "http/redact.h"

namespace hsdo::http {

namespace {

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

// libcurl's detail without its measures ("after 301 milliseconds", "after 0 ms", "with 0 bytes
// received", "with 10 out of 20 bytes received", "with 7 bytes remaining to read"): the callers
// log each cause once, by its text,
// and a timing that differs at every request made every cycle a new cause.
std::string WithoutMeasures(std::string_view detail) {
  std::string out;
  while (!detail.empty()) {
    std::size_t skip = 0;
    for (std::string_view head : {" after ", " with "}) {
      if (!detail.starts_with(head)) continue;
      std::string_view rest = detail.substr(head.size());
      std::size_t digits = 0;
      while (digits < rest.size() && rest[digits] >= '0' && rest[digits] <= '9') ++digits;
      if (digits == 0) continue;
      rest.remove_prefix(digits);
      if (head == " with " && rest.starts_with(" out of ")) {
        std::size_t more = 8;
        while (more < rest.size() && rest[more] >= '0' && rest[more] <= '9') ++more;
        rest.remove_prefix(more);
      }
      for (std::string_view unit :
           {" milliseconds", " ms", " bytes received", " bytes remaining to read"}) {
        if (rest.starts_with(unit)) {
          skip = detail.size() - rest.size() + unit.size();
          break;
        }
      }
      if (skip > 0) break;
    }
    if (skip > 0) {
      detail.remove_prefix(skip);
    } else {
      out += detail.front();
      detail.remove_prefix(1);
    }
  }
  return out;
}

struct BodySink {
  std::string* body;
  std::size_t limit;
  bool too_large = false;
};

size_t WriteBody(char* data, size_t size, size_t count, void* user) {
  auto& sink = *static_cast<BodySink*>(user);
  if (sink.body->size() + size * count > sink.limit) {
    sink.too_large = true;
    return 0;  // aborts the transfer (CURLE_WRITE_ERROR)
  }
  sink.body->append(data, size * count);
  return size * count;
}

// A return value other than size * count aborts the transfer (CURLE_WRITE_ERROR).
size_t StreamBody(char* data, size_t size, size_t count, void* user) {
  const auto& on_body = *static_cast<const std::function<bool(std::string_view)>*>(user);
  return on_body(std::string_view(data, size * count)) ? size * count : 0;
}

size_t WriteHeader(char* data, size_t size, size_t count, void* user) {
  auto* headers = static_cast<Headers*>(user);
  const std::string_view line(data, size * count);
  if (line.starts_with("HTTP/")) {
    headers->clear();  // a new response (after a redirect or 100-continue)
  } else if (const auto colon = line.find(':'); colon != std::string_view::npos) {
    headers->emplace_back(std::string(Trim(line.substr(0, colon))),
                          std::string(Trim(line.substr(colon + 1))));
  }
  return size * count;
}

// libcurl is loaded on first use, not when the process starts: it pulls in TLS, Kerberos,
// LDAP, SSH and RTMP libraries, some of which initialise themselves on load, for about 6 MB of
// resident memory that a process without an HTTP client (an agent on SQLite) never needs.
// Debian's GnuTLS build of libcurl (libcurl3-gnutls) is preferred to the OpenSSL one: it is the
// same library and API, and OpenSSL 3's initialisation alone makes about 1.5 MB resident
// (docs/benchmarks.md, "Where the agent's memory goes").
struct CurlLibrary {
  decltype(&curl_global_init) global_init = nullptr;
  decltype(&curl_easy_init) easy_init = nullptr;
  decltype(&curl_easy_cleanup) easy_cleanup = nullptr;
  decltype(&curl_easy_reset) easy_reset = nullptr;
  decltype(&curl_easy_setopt) easy_setopt = nullptr;
  decltype(&curl_easy_perform) easy_perform = nullptr;
  decltype(&curl_easy_getinfo) easy_getinfo = nullptr;
  decltype(&curl_easy_strerror) easy_strerror = nullptr;
  decltype(&curl_slist_append) slist_append = nullptr;
  decltype(&curl_slist_free_all) slist_free_all = nullptr;
  decltype(&curl_multi_init) multi_init = nullptr;
  decltype(&curl_multi_cleanup) multi_cleanup = nullptr;
  decltype(&curl_multi_add_handle) multi_add_handle = nullptr;
  decltype(&curl_multi_remove_handle) multi_remove_handle = nullptr;
  decltype(&curl_multi_perform) multi_perform = nullptr;
  decltype(&curl_multi_poll) multi_poll = nullptr;
  decltype(&curl_multi_wakeup) multi_wakeup = nullptr;
  decltype(&curl_multi_info_read) multi_info_read = nullptr;
};

// curl_global_init initialises libssh2 (a dependency of Debian's libcurl), which initialises
// OpenSSL even in the GnuTLS build: 1.5 MB resident for SCP and SFTP, which hsdo never uses
// (CURLOPT_PROTOCOLS_STR is "http,https"). libssh2_init(LIBSSH2_INIT_NO_CRYPTO) first makes
// libcurl's own libssh2_init a no-op (libssh2_init(3)); OpenSSL 3 would still initialise
// itself should libssh2 ever be used. libssh2 is loaded already, as libcurl's dependency.
void SkipSshCryptoInit() {
  constexpr int kInitNoCrypto = 0x0001;  // LIBSSH2_INIT_NO_CRYPTO in libssh2.h
  void* ssh = ::dlopen("libssh2.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (ssh == nullptr) return;
  if (auto* init = reinterpret_cast<int (*)(int)>(::dlsym(ssh, "libssh2_init"))) {
    init(kInitNoCrypto);
  }
  ::dlclose(ssh);  // drops the reference RTLD_NOLOAD took; libcurl keeps it loaded
}

// The loaded library, initialised once; nullptr when it cannot be loaded (`error` says why).
const CurlLibrary* Curl(std::string* error) {
  static CurlLibrary library;
  static std::string load_error;
  static std::once_flag once;
  std::call_once(once, [] {
    SharedLibrary curl("libcurl-gnutls.so.4");
    CurlLibrary loaded;
    curl.Bind(loaded.global_init, "curl_global_init");
    curl.Bind(loaded.easy_init, "curl_easy_init");
    curl.Bind(loaded.easy_cleanup, "curl_easy_cleanup");
    curl.Bind(loaded.easy_reset, "curl_easy_reset");
    curl.Bind(loaded.easy_setopt, "curl_easy_setopt");
    curl.Bind(loaded.easy_perform, "curl_easy_perform");
    curl.Bind(loaded.easy_getinfo, "curl_easy_getinfo");
    curl.Bind(loaded.easy_strerror, "curl_easy_strerror");
    curl.Bind(loaded.slist_append, "curl_slist_append");
    curl.Bind(loaded.slist_free_all, "curl_slist_free_all");
    curl.Bind(loaded.multi_init, "curl_multi_init");
    curl.Bind(loaded.multi_cleanup, "curl_multi_cleanup");
    curl.Bind(loaded.multi_add_handle, "curl_multi_add_handle");
    curl.Bind(loaded.multi_remove_handle, "curl_multi_remove_handle");
    curl.Bind(loaded.multi_perform, "curl_multi_perform");
    curl.Bind(loaded.multi_poll, "curl_multi_poll");
    curl.Bind(loaded.multi_wakeup, "curl_multi_wakeup");
    curl.Bind(loaded.multi_info_read, "curl_multi_info_read");
    if (!curl.error().empty()) {
      load_error = curl.error();
      return;
    }
    SkipSshCryptoInit();
    loaded.global_init(CURL_GLOBAL_DEFAULT);
    library = loaded;
  });
  if (library.easy_init == nullptr) {
    if (error != nullptr) *error = load_error;
    return nullptr;
  }
  return &library;
}

// The longest curl_multi_poll wait; a cancel wakes it at once (curl_multi_wakeup), so this only
// bounds how long a lost wakeup could go unnoticed.
constexpr int kPollMs = 200;

// Runs the transfer through a multi handle so that a cancel token wakes the wait at once
// (curl_multi_wakeup from the token's stop callback) rather than at libcurl's next progress
// call, which can be a second away while a peer says nothing.
class CurlHttpClient final : public HttpClient {
 public:
  CurlHttpClient(TlsOptions tls, std::stop_token cancel, Connections connections)
      : connections_(connections),
        tls_(std::move(tls)),
        ca_file_(CaFile(tls_,
                        [](const std::string& path) { return ::access(path.c_str(), R_OK) == 0; })),
        cancel_(std::move(cancel)),
        curl_(Curl(&load_error_)) {
    if (curl_ != nullptr) {
      handle_ = curl_->easy_init();
      multi_ = curl_->multi_init();
    }
  }
  ~CurlHttpClient() override {
    if (handle_ != nullptr) curl_->easy_cleanup(handle_);
    // The easy handle was removed from it after every transfer.
    if (multi_ != nullptr) curl_->multi_cleanup(multi_);
  }
  CurlHttpClient(const CurlHttpClient&) = delete;
  CurlHttpClient& operator=(const CurlHttpClient&) = delete;

  Result<Response> Send(const Request& request) override {
    if (curl_ == nullptr) {
      return MakeError(ErrorCode::kUnavailable, "cannot load libcurl: {}", load_error_);
    }
    if (handle_ == nullptr || multi_ == nullptr) {
      return MakeError(ErrorCode::kUnavailable, "curl_easy_init failed");
    }
    curl_->easy_reset(handle_);
    Response response;
    curl_slist* header_list = nullptr;
    for (const auto& [name, value] : request.headers) {
      const std::string line = value.empty() ? name + ";" : name + ": " + value;
      header_list = curl_->slist_append(header_list, line.c_str());
    }
    // Never let curl add "Expect: 100-continue" (it is not signed, and it costs a round trip).
    header_list = curl_->slist_append(header_list, "Expect:");
    curl_->easy_setopt(handle_, CURLOPT_URL, request.url.c_str());
    detail_[0] = '\0';
    curl_->easy_setopt(handle_, CURLOPT_ERRORBUFFER, detail_.data());
    curl_->easy_setopt(handle_, CURLOPT_HTTPHEADER, header_list);
    curl_->easy_setopt(handle_, CURLOPT_NOSIGNAL, 1L);
    curl_->easy_setopt(handle_, CURLOPT_TIMEOUT_MS, static_cast<long>(request.timeout.count()));
    curl_->easy_setopt(handle_, CURLOPT_CONNECTTIMEOUT_MS,
                       static_cast<long>(request.connect_timeout.count()));
    BodySink sink{.body = &response.body, .limit = request.max_body_bytes};
    if (request.on_body) {
      curl_->easy_setopt(handle_, CURLOPT_WRITEFUNCTION, StreamBody);
      curl_->easy_setopt(handle_, CURLOPT_WRITEDATA, &request.on_body);
    } else {
      curl_->easy_setopt(handle_, CURLOPT_WRITEFUNCTION, WriteBody);
      curl_->easy_setopt(handle_, CURLOPT_WRITEDATA, &sink);
    }
    curl_->easy_setopt(handle_, CURLOPT_HEADERFUNCTION, WriteHeader);
    curl_->easy_setopt(handle_, CURLOPT_HEADERDATA, &response.headers);
    curl_->easy_setopt(handle_, CURLOPT_PROTOCOLS_STR, "http,https");
    if (connections_ == Connections::kClose) curl_->easy_setopt(handle_, CURLOPT_FORBID_REUSE, 1L);
    if (request.method == "GET") {
      curl_->easy_setopt(handle_, CURLOPT_HTTPGET, 1L);
    } else if (request.method == "HEAD") {
      curl_->easy_setopt(handle_, CURLOPT_NOBODY, 1L);
    } else {
      curl_->easy_setopt(handle_, CURLOPT_CUSTOMREQUEST, request.method.c_str());
      curl_->easy_setopt(handle_, CURLOPT_POSTFIELDS, request.body.data());
      curl_->easy_setopt(handle_, CURLOPT_POSTFIELDSIZE_LARGE,
                         static_cast<curl_off_t>(request.body.size()));
    }
    if (!ca_file_.empty()) {
      curl_->easy_setopt(handle_, CURLOPT_CAINFO, ca_file_.c_str());
      curl_->easy_setopt(handle_, CURLOPT_CAPATH, static_cast<const char*>(nullptr));
    }
    if (!tls_.client_cert.empty()) {
      curl_->easy_setopt(handle_, CURLOPT_SSLCERT, tls_.client_cert.c_str());
    }
    if (!tls_.client_key.empty())
      curl_->easy_setopt(handle_, CURLOPT_SSLKEY, tls_.client_key.c_str());
    if (!tls_.verify_peer) {
      curl_->easy_setopt(handle_, CURLOPT_SSL_VERIFYPEER, 0L);
      curl_->easy_setopt(handle_, CURLOPT_SSL_VERIFYHOST, 0L);
    }

    const CURLcode code = Perform(request.cancel);
    curl_->slist_free_all(header_list);
    if (code == CURLE_ABORTED_BY_CALLBACK) {
      return MakeError(ErrorCode::kUnavailable, "{} {}: cancelled", request.method,
                       UrlForMessages(request.url));
    }
    if (sink.too_large) {
      return MakeError(ErrorCode::kUnavailable, "{} {}: the answer is larger than {} MiB: not read",
                       request.method, UrlForMessages(request.url), request.max_body_bytes >> 20);
    }
    if (code != CURLE_OK) {
      // The URL is safe to show; headers (which may carry tokens) are not. libcurl's detail
      // (which CA file failed to verify the server, ...) tells the connection's story only.
      const std::string detail = WithoutMeasures(detail_.data());
      return MakeError(ErrorCode::kUnavailable, "{} {}: {}{}{}", request.method,
                       UrlForMessages(request.url), curl_->easy_strerror(code),
                       detail.empty() ? "" : ": ", detail);
    }
    curl_->easy_getinfo(handle_, CURLINFO_RESPONSE_CODE, &response.status);
    return response;
  }

 private:
  // curl_easy_perform, but ended within milliseconds when `cancel` or the client's own token
  // is stopped (CURLE_ABORTED_BY_CALLBACK then).
  CURLcode Perform(const std::stop_token& cancel) {
    const auto cancelled = [&] { return cancel.stop_requested() || cancel_.stop_requested(); };
    if (cancelled()) return CURLE_ABORTED_BY_CALLBACK;
    if (curl_->multi_add_handle(multi_, handle_) != CURLM_OK) return CURLE_FAILED_INIT;
    const auto wake = [this] { curl_->multi_wakeup(multi_); };
    std::optional<std::stop_callback<decltype(wake)>> on_cancel;
    std::optional<std::stop_callback<decltype(wake)>> on_client_cancel;
    if (cancel.stop_possible()) on_cancel.emplace(cancel, wake);
    if (cancel_.stop_possible()) on_client_cancel.emplace(cancel_, wake);

    CURLcode result = CURLE_ABORTED_BY_CALLBACK;
    for (;;) {
      int running = 0;
      if (curl_->multi_perform(multi_, &running) != CURLM_OK) {
        result = CURLE_FAILED_INIT;
        break;
      }
      int queued = 0;
      bool done = false;
      while (CURLMsg* message = curl_->multi_info_read(multi_, &queued)) {
        if (message->msg == CURLMSG_DONE && message->easy_handle == handle_) {
          result = message->data.result;
          done = true;
        }
      }
      if (done || cancelled()) break;
      if (running == 0) {  // not expected: a finished transfer always leaves a message
        result = CURLE_GOT_NOTHING;
        break;
      }
      if (curl_->multi_poll(multi_, nullptr, 0, kPollMs, nullptr) != CURLM_OK) {
        result = CURLE_FAILED_INIT;
        break;
      }
      if (cancelled()) break;
    }
    // Removing an unfinished transfer closes its connection; a finished one is kept alive.
    curl_->multi_remove_handle(multi_, handle_);
    return result;
  }

  Connections connections_;
  TlsOptions tls_;
  std::string ca_file_;  // CaFile: the only CAs that verify servers
  std::stop_token cancel_;
  std::string load_error_;
  const CurlLibrary* curl_;
  CURL* handle_ = nullptr;
  CURLM* multi_ = nullptr;
  std::array<char, CURL_ERROR_SIZE> detail_{};  // CURLOPT_ERRORBUFFER
};

}  // namespace

std::string Response::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (EqualsIgnoreCase(key, name)) return value;
  }
  return {};
}

std::string CaFile(const TlsOptions& tls, const std::function<bool(const std::string&)>& readable) {
  if (!tls.ca_file.empty()) return tls.ca_file;
  for (const std::string_view bundle : kSystemCaBundles) {
    if (readable(std::string(bundle))) return std::string(bundle);
  }
  return {};
}

std::unique_ptr<HttpClient> MakeCurlHttpClient(TlsOptions tls, std::stop_token cancel,
                                               Connections connections) {
  return std::make_unique<CurlHttpClient>(std::move(tls), std::move(cancel), connections);
}

std::string UrlEncode(std::string_view text, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_slash && c == '/')) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

}  // namespace hsdo::http
