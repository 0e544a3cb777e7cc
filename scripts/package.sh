#!/usr/bin/env bash
# Builds hsdo's Debian package (CPack) from a build with the tests off, in build-pkg/
# (or, as the test suite does, from the existing build HSDO_PACKAGE_BUILD_DIR names, as it is):
#   scripts/package.sh [OUTPUT_DIR]      (default: build-pkg/)
# prints the path of the .deb on its last line. Install it with `sudo apt install ./FILE.deb`
# (then configure /etc/hsdo/env.yaml and `systemctl enable --now hsdo-client.service`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${HSDO_PACKAGE_BUILD_DIR:-$ROOT/build-pkg}
OUT=${1:-$BUILD}

if [ -n "${HSDO_PACKAGE_BUILD_DIR:-}" ] && [ -f "$BUILD/CMakeCache.txt" ]; then
  # Package a configured build as it is (the test suite packages the build it tests rather
  # than compiling everything a second time): only the install prefix is set; the tests are
  # not installed. It is not built again: the suite's other tests run its hsdo meanwhile
  # (pytest-xdist), and a relink would make it missing or not executable for a moment.
  for built in src/app/hsdo man/hsdo.1.gz; do
    if [ ! -f "$BUILD/$built" ]; then
      echo "package: $BUILD/$built is not built (cmake --build $BUILD first)" >&2
      exit 1
    fi
  done
  echo "package: packaging $BUILD as it is built (installed under /usr)" >&2
  cmake -DCMAKE_INSTALL_PREFIX=/usr "$BUILD" >/dev/null
else
  echo "package: configuring $BUILD (tests off, installed under /usr)" >&2
  LAUNCHER=()
  command -v ccache >/dev/null && LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -S . -B "$BUILD" -G Ninja -DHSDO_BUILD_TESTS=OFF -DHSDO_WERROR=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr "${LAUNCHER[@]}" >/dev/null
  echo "package: building hsdo and the man page" >&2
  cmake --build "$BUILD" -j "$(nproc)" >&2
fi
echo "package: running cpack" >&2
mkdir -p "$OUT"
(cd "$BUILD" && cpack -G DEB -B "$OUT" >&2)
rm -rf "$OUT/_CPack_Packages"
ls -t "$OUT"/hsdo_*.deb | head -1
