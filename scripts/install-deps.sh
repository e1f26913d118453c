#!/usr/bin/env bash
# Install the Debian 12 packages the build, tests and benchmarks need,
# only when something is missing (so repeated runs are quick and offline).
set -euo pipefail
pkgs=(build-essential pkg-config libcurl4-openssl-dev libevent-dev libjansson-dev libyajl-dev
      libcmocka-dev libedit-dev libssl-dev python3 curl openssl clang-format
      clang libclang-rt-14-dev nginx-light wrk procps)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
