#!/usr/bin/env bash
# Installs the Debian packages pagoda builds against (Debian 12). Safe to re-run.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build git \
  libpcre2-dev libutf8proc-dev nlohmann-json3-dev libgtest-dev libboost-dev \
  clang-14 libclang-rt-14-dev >/dev/null
# Python tools for the integration tests (the official openai client, pytest) and the tokenizer
# reference they compare against.
if ! python3 -m pip --version >/dev/null 2>&1; then
  $SUDO apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
fi
python3 -m pip install -q openai pytest tokenizers 2>/dev/null || \
  python3 -m pip install -q --break-system-packages openai pytest tokenizers
