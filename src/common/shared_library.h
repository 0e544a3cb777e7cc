// SharedLibrary: a library loaded on first use with dlopen rather than linked (libcurl,
// Nettle), so that a process that never needs it never maps it: each costs 1.4-6.5 MB
// resident, most of it relocated on load (docs/benchmarks.md, "Where the agent's memory goes").
#pragma once

#include <dlfcn.h>

#include <initializer_list>
#include <string>

namespace hsdo {

class SharedLibrary {
 public:
  // Opens `soname` (RTLD_NOW | RTLD_LOCAL). It is never closed: the functions bound from it
  // are kept for the life of the process.
  explicit SharedLibrary(const char* soname)
      : soname_(soname), handle_(::dlopen(soname, RTLD_NOW | RTLD_LOCAL)) {
    if (handle_ == nullptr) error_ = ::dlerror();
  }

  // The first of `sonames` that loads; error() names the last failure when none does.
  explicit SharedLibrary(std::initializer_list<const char*> sonames) : handle_(nullptr) {
    for (const char* soname : sonames) {
      soname_ = soname;
      handle_ = ::dlopen(soname, RTLD_NOW | RTLD_LOCAL);
      if (handle_ != nullptr) return;
      error_ = ::dlerror();
    }
  }

  // Points `function` at the symbol `name`; nullptr (and error() says so) when it is missing.
  template <typename Function>
  void Bind(Function& function, const char* name) {
    function = handle_ == nullptr ? nullptr : reinterpret_cast<Function>(::dlsym(handle_, name));
    if (function == nullptr && error_.empty()) error_ = soname_ + " lacks " + name;
  }

  // Empty while the library loaded and every Bind found its symbol.
  const std::string& error() const { return error_; }

  // The soname loaded (the last one tried when none loaded).
  const std::string& soname() const { return soname_; }

 private:
  std::string soname_;
  void* handle_;
  std::string error_;
};

}  // namespace hsdo
