// spdlog's implementation, compiled once here rather than in every file that logs.
//
// With HSDO_SMALL_LINK (the default) hsdo does not link Debian's libspdlog.so (its relocations
// and constructors cost an agent resident memory, docs/benchmarks.md). Used header-only instead,
// spdlog's implementation is compiled, at -O2, into every one of the ~70 files that include it:
// about 10 s of compiler time each, most of the build. So every file uses spdlog in its
// "compiled library" mode (SPDLOG_COMPILED_LIB: declarations only) and this file is that
// library: spdlog's own -inl.h definitions, plus explicit instantiations of the templates hsdo
// uses (the sinks and their factories). A missing one is a link error, never a silent change.
#ifndef SPDLOG_COMPILED_LIB
#error "spdlog_impl.cc is built with SPDLOG_COMPILED_LIB (CMakeLists.txt, HSDO_SMALL_LINK)"
#endif

#include <mutex>

#include <spdlog/common-inl.h>
#include <spdlog/details/backtracer-inl.h>
#include <spdlog/details/log_msg-inl.h>
#include <spdlog/details/log_msg_buffer-inl.h>
#include <spdlog/details/null_mutex.h>
#include <spdlog/details/os-inl.h>
#include <spdlog/details/periodic_worker-inl.h>
#include <spdlog/details/registry-inl.h>
#include <spdlog/logger-inl.h>
#include <spdlog/pattern_formatter-inl.h>
#include <spdlog/sinks/ansicolor_sink-inl.h>
#include <spdlog/sinks/base_sink-inl.h>
#include <spdlog/sinks/sink-inl.h>
#include <spdlog/sinks/stdout_color_sinks-inl.h>
#include <spdlog/sinks/stdout_sinks-inl.h>
#include <spdlog/spdlog-inl.h>

namespace spdlog {

template class sinks::base_sink<std::mutex>;
template class sinks::base_sink<details::null_mutex>;

template class sinks::stdout_sink_base<details::console_mutex>;
template class sinks::stdout_sink_base<details::console_nullmutex>;
template class sinks::stdout_sink<details::console_mutex>;
template class sinks::stdout_sink<details::console_nullmutex>;
template class sinks::stderr_sink<details::console_mutex>;
template class sinks::stderr_sink<details::console_nullmutex>;
template std::shared_ptr<logger> stdout_logger_mt<synchronous_factory>(const std::string&);
template std::shared_ptr<logger> stdout_logger_st<synchronous_factory>(const std::string&);
template std::shared_ptr<logger> stderr_logger_mt<synchronous_factory>(const std::string&);
template std::shared_ptr<logger> stderr_logger_st<synchronous_factory>(const std::string&);

template class sinks::ansicolor_sink<details::console_mutex>;
template class sinks::ansicolor_sink<details::console_nullmutex>;
template class sinks::ansicolor_stdout_sink<details::console_mutex>;
template class sinks::ansicolor_stdout_sink<details::console_nullmutex>;
template class sinks::ansicolor_stderr_sink<details::console_mutex>;
template class sinks::ansicolor_stderr_sink<details::console_nullmutex>;
template std::shared_ptr<logger> stdout_color_mt<synchronous_factory>(const std::string&,
                                                                      color_mode);
template std::shared_ptr<logger> stdout_color_st<synchronous_factory>(const std::string&,
                                                                      color_mode);
template std::shared_ptr<logger> stderr_color_mt<synchronous_factory>(const std::string&,
                                                                      color_mode);
template std::shared_ptr<logger> stderr_color_st<synchronous_factory>(const std::string&,
                                                                      color_mode);

}  // namespace spdlog
