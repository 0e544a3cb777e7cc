// fmt's implementation, compiled once here rather than in every file that formats.
//
// With HSDO_SMALL_LINK (the default) hsdo does not link Debian's libfmt.so (its relocations
// cost an agent resident memory, docs/benchmarks.md). Used header-only (FMT_HEADER_ONLY), fmt's
// implementation (format-inl.h) was compiled, at -O2 or -Os, into every file that formats or
// logs: seconds of compiler time each (settings.cc: 13-14 s header-only, 8-9 s without; the
// whole build on 2 cores: 332 s, 270 s without). So every file uses fmt as a compiled library
// (declarations only) and this file is that library: format-inl.h's definitions, plus explicit
// instantiations of the templates that format.h and core.h declare and leave to the library.
// A missing one is a link error, never a silent change.
#ifdef FMT_HEADER_ONLY
#error "fmt_impl.cc is for fmt as a compiled library (CMakeLists.txt, HSDO_SMALL_LINK)"
#endif

#include <locale>

#include <fmt/format-inl.h>

FMT_BEGIN_NAMESPACE
namespace detail {

template FMT_API auto dragonbox::to_decimal(float x) noexcept -> dragonbox::decimal_fp<float>;
template FMT_API auto dragonbox::to_decimal(double x) noexcept -> dragonbox::decimal_fp<double>;

template FMT_API locale_ref::locale_ref(const std::locale& loc);
template FMT_API auto locale_ref::get<std::locale>() const -> std::locale;

template FMT_API auto thousands_sep_impl(locale_ref) -> thousands_sep_result<char>;
template FMT_API auto decimal_point_impl(locale_ref) -> char;

}  // namespace detail
FMT_END_NAMESPACE
