#!/usr/bin/env bash
# Builds hsdo's Debian package (CPack) from a build with the tests off, in build-pkg/
# (or from the configured build HSDO_PACKAGE_BUILD_DIR names, as the test suite does):
#   scripts/package.sh [OUTPUT_DIR]      (default: build-pkg/)
# prints the path of the .deb on its last line. Install it with `sudo apt install ./FILE.deb`
# (then configure /etc/hsdo/env.yaml and `systemctl enable --now hsdo-client.service`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${HSDO_PACKAGE_BUILD_DIR:-$ROOT/build-pkg}
OUT=${1:-$BUILD}

if [ -n "${HSDO_PACKAGE_BUILD_DIR:-}" ] && [ -f "$BUILD/CMakeCache.txt" ]; then
  # Reuse a configured build (the test suite packages its own build rather than compiling
  # everything a second time): only the install prefix is set; the tests are not installed.
  echo "package: reusing $BUILD (installed under /usr)" >&2
  cmake -DCMAKE_INSTALL_PREFIX=/usr "$BUILD" >/dev/null
else
  echo "package: configuring $BUILD (tests off, installed under /usr)" >&2
  LAUNCHER=()
  command -v ccache >/dev/null && LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -S . -B "$BUILD" -G Ninja -DHSDO_BUILD_TESTS=OFF -DHSDO_WERROR=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr "${LAUNCHER[@]}" >/dev/null
fi
echo "package: building hsdo and the man page" >&2
cmake --build "$BUILD" -j "$(nproc)" >&2
echo "package: running cpack" >&2
mkdir -p "$OUT"
(cd "$BUILD" && cpack -G DEB -B "$OUT" >&2)
rm -rf "$OUT/_CPack_Packages"
ls -t "$OUT"/hsdo_*.deb | head -1
