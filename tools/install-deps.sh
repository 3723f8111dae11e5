#!/usr/bin/env bash
#   install-deps.sh - install what chatd needs to build, run and test, on
#   Debian 12. Installs only what is missing; safe to run again.
#   Run as root (or with sudo available).
set -euo pipefail

packages=(
    build-essential cmake pkg-config
    libzmq3-dev libczmq-dev libwebsockets-dev libwebsockets-evlib-uv libuv1-dev libsqlite3-dev libpq-dev
    libjansson-dev libinih-dev libsodium-dev libjemalloc-dev
    libcmocka-dev python3-websockets postgresql-15 postgresql-client-15
    valgrind clang libclang-rt-14-dev sqlite3
)

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: everything is installed"
    exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
