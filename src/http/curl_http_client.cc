#include <curl/curl.h>
#include <dlfcn.h>

#include <algorithm>
#include <cctype>
#include <mutex>

#include "http/http_client.h"

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

size_t WriteBody(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
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

// Non-zero aborts the transfer (CURLE_ABORTED_BY_CALLBACK).
int AbortWhenCancelled(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<const std::stop_token*>(user)->stop_requested() ? 1 : 0;
}

// libcurl is loaded on first use, not when the process starts: it pulls in TLS, Kerberos,
// LDAP, SSH and RTMP libraries, some of which initialise themselves on load, for about 6 MB of
// resident memory that a process without an HTTP client (an agent on SQLite) never needs.
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
};

// The loaded library, initialised once; nullptr when it cannot be loaded (`error` says why).
const CurlLibrary* Curl(std::string* error) {
  static CurlLibrary library;
  static std::string load_error;
  static std::once_flag once;
  std::call_once(once, [] {
    void* handle = ::dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      load_error = ::dlerror();
      return;
    }
    CurlLibrary loaded;
    bool complete = true;
    auto bind = [&](auto& function, const char* name) {
      function =
          reinterpret_cast<std::remove_reference_t<decltype(function)>>(::dlsym(handle, name));
      complete = complete && function != nullptr;
    };
    bind(loaded.global_init, "curl_global_init");
    bind(loaded.easy_init, "curl_easy_init");
    bind(loaded.easy_cleanup, "curl_easy_cleanup");
    bind(loaded.easy_reset, "curl_easy_reset");
    bind(loaded.easy_setopt, "curl_easy_setopt");
    bind(loaded.easy_perform, "curl_easy_perform");
    bind(loaded.easy_getinfo, "curl_easy_getinfo");
    bind(loaded.easy_strerror, "curl_easy_strerror");
    bind(loaded.slist_append, "curl_slist_append");
    bind(loaded.slist_free_all, "curl_slist_free_all");
    if (!complete) {
      load_error = "libcurl.so.4 lacks a curl_* function";
      return;
    }
    loaded.global_init(CURL_GLOBAL_DEFAULT);
    library = loaded;
  });
  if (library.easy_init == nullptr) {
    if (error != nullptr) *error = load_error;
    return nullptr;
  }
  return &library;
}

class CurlHttpClient final : public HttpClient {
 public:
  explicit CurlHttpClient(TlsOptions tls) : tls_(std::move(tls)), curl_(Curl(&load_error_)) {
    if (curl_ != nullptr) handle_ = curl_->easy_init();
  }
  ~CurlHttpClient() override {
    if (handle_ != nullptr) curl_->easy_cleanup(handle_);
  }
  CurlHttpClient(const CurlHttpClient&) = delete;
  CurlHttpClient& operator=(const CurlHttpClient&) = delete;

  Result<Response> Send(const Request& request) override {
    if (curl_ == nullptr) {
      return MakeError(ErrorCode::kUnavailable, "cannot load libcurl: {}", load_error_);
    }
    if (handle_ == nullptr) return MakeError(ErrorCode::kUnavailable, "curl_easy_init failed");
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
    curl_->easy_setopt(handle_, CURLOPT_HTTPHEADER, header_list);
    curl_->easy_setopt(handle_, CURLOPT_NOSIGNAL, 1L);
    curl_->easy_setopt(handle_, CURLOPT_TIMEOUT_MS, static_cast<long>(request.timeout.count()));
    curl_->easy_setopt(handle_, CURLOPT_CONNECTTIMEOUT_MS,
                       static_cast<long>(request.connect_timeout.count()));
    if (request.on_body) {
      curl_->easy_setopt(handle_, CURLOPT_WRITEFUNCTION, StreamBody);
      curl_->easy_setopt(handle_, CURLOPT_WRITEDATA, &request.on_body);
    } else {
      curl_->easy_setopt(handle_, CURLOPT_WRITEFUNCTION, WriteBody);
      curl_->easy_setopt(handle_, CURLOPT_WRITEDATA, &response.body);
    }
    curl_->easy_setopt(handle_, CURLOPT_HEADERFUNCTION, WriteHeader);
    curl_->easy_setopt(handle_, CURLOPT_HEADERDATA, &response.headers);
    curl_->easy_setopt(handle_, CURLOPT_PROTOCOLS_STR, "http,https");
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
    if (request.cancel.stop_possible()) {
      curl_->easy_setopt(handle_, CURLOPT_XFERINFOFUNCTION, AbortWhenCancelled);
      curl_->easy_setopt(handle_, CURLOPT_XFERINFODATA, &request.cancel);
      curl_->easy_setopt(handle_, CURLOPT_NOPROGRESS, 0L);
    }
    if (!tls_.ca_file.empty()) curl_->easy_setopt(handle_, CURLOPT_CAINFO, tls_.ca_file.c_str());
    if (!tls_.client_cert.empty()) {
      curl_->easy_setopt(handle_, CURLOPT_SSLCERT, tls_.client_cert.c_str());
    }
    if (!tls_.client_key.empty())
      curl_->easy_setopt(handle_, CURLOPT_SSLKEY, tls_.client_key.c_str());
    if (!tls_.verify_peer) {
      curl_->easy_setopt(handle_, CURLOPT_SSL_VERIFYPEER, 0L);
      curl_->easy_setopt(handle_, CURLOPT_SSL_VERIFYHOST, 0L);
    }

    const CURLcode code = curl_->easy_perform(handle_);
    curl_->slist_free_all(header_list);
    if (code != CURLE_OK) {
      // The URL is safe to show; headers (which may carry tokens) are not.
      return MakeError(ErrorCode::kUnavailable, "{} {}: {}", request.method,
                       StripQuery(request.url), curl_->easy_strerror(code));
    }
    curl_->easy_getinfo(handle_, CURLINFO_RESPONSE_CODE, &response.status);
    return response;
  }

 private:
  static std::string StripQuery(const std::string& url) { return url.substr(0, url.find('?')); }

  TlsOptions tls_;
  std::string load_error_;
  const CurlLibrary* curl_;
  CURL* handle_ = nullptr;
};

}  // namespace

std::string Response::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (EqualsIgnoreCase(key, name)) return value;
  }
  return {};
}

std::unique_ptr<HttpClient> MakeCurlHttpClient(TlsOptions tls) {
  return std::make_unique<CurlHttpClient>(std::move(tls));
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
