#!/usr/bin/env bash
# Installs the Debian packages pagoda builds against (Debian 12). Safe to re-run.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build git \
  libpcre2-dev libutf8proc-dev nlohmann-json3-dev libgtest-dev \
  clang-14 libclang-rt-14-dev >/dev/null
