#!/usr/bin/env bash
# Installs what custflow needs and is missing: Debian packages (build tools, Redis,
# PostgreSQL client) and the tansu broker (cargo install, pinned). Idempotent.
# `--test` adds what only the test suite uses: Chromium and ChromeDriver (dashboard test),
# the openssl tool (certificates for the TLS test).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_pkgs=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_cmd cc || need_pkgs+=(build-essential)
have_cmd make || need_pkgs+=(make)
have_cmd pkg-config || need_pkgs+=(pkg-config)
have_cmd redis-server || need_pkgs+=(redis-server)
have_cmd python3 || need_pkgs+=(python3)
python3 -m venv --help >/dev/null 2>&1 || need_pkgs+=(python3-venv)
dpkg -s zlib1g-dev >/dev/null 2>&1 || need_pkgs+=(zlib1g-dev)
dpkg -s libssl-dev >/dev/null 2>&1 || need_pkgs+=(libssl-dev)
if [[ "${1:-}" == "--test" ]]; then
  have_cmd chromium || need_pkgs+=(chromium)
  have_cmd chromedriver || need_pkgs+=(chromium-driver)
  have_cmd openssl || need_pkgs+=(openssl)
fi

if ((${#need_pkgs[@]})); then
  say "installing Debian packages: ${need_pkgs[*]}"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq || die "apt-get update failed; check the network or your apt sources"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" \
    || die "apt-get install ${need_pkgs[*]} failed"
fi

have_cmd cargo || die "cargo is missing: install Rust (rustup, or Debian's cargo package) and run again"

if [[ ! -x "$TANSU_BIN" ]]; then
  say "building the tansu broker $TANSU_VERSION (once; about 10 minutes on 2 cores)"
  mkdir -p "$CACHE"
  cargo install tansu --version "$TANSU_VERSION" --locked --features "$TANSU_FEATURES" \
    --root "$(dirname "$(dirname "$TANSU_BIN")")" --target-dir "$CACHE/tansu-build" \
    || die "cargo install tansu failed; see the output above"
fi
say "tools ready (tansu: $TANSU_BIN)"
