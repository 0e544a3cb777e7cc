#!/usr/bin/env bash
# Installs every Debian package that hsdo's build, demo and tests need. Idempotent: does
# nothing when everything is there. Run as root (or with sudo) on Debian 12 (bookworm).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config clang-format
  libcurl4-openssl-dev libcurl3-gnutls nettle-dev nlohmann-json3-dev libpugixml-dev libyaml-cpp-dev
  libspdlog-dev libfmt-dev libcli11-dev prometheus-cpp-dev libcivetweb-dev libsqlite3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  haproxy socat sqlite3 curl openssl python3 python3-venv python3-pip
  # The package test (CPack's dpkg-shlibdeps, systemd-analyze verify, man) and promtool.
  dpkg-dev systemd man-db prometheus
  # STORE=etcd's tests: a 3-member etcd cluster on loopback.
  etcd-server
)

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the packaged HAProxy service where systemd runs; hsdo's demo and tests start
# their own HAProxy processes on loopback and never use that one.
