#!/usr/bin/env bash
# Installs what `cargo xtask console` runs besides our own binaries and Node.js: Debian's
# `chromium` (headless; the console is checked in a real browser). Idempotent: exits at once
# when it is already there. Needs root and apt-get (CI runs as root on Debian).
#
#   bash xtask/console/install-deps.sh
#
# `cargo xtask console` runs it itself when chromium is missing. Quiet on success: one line
# saying what is there.
set -euo pipefail

have() {
    command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]
}

if have; then
    echo "install-deps: chromium already installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: chromium missing; run this script as root (it uses apt-get):" \
        "sudo bash xtask/console/install-deps.sh" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: chromium missing and no apt-get here (not Debian/Ubuntu):" \
        "install chromium with this system's package manager" >&2
    exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "install-deps: installing chromium from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
# Another apt run (a parallel installer, unattended upgrades) holds the lock: wait for it.
lock=(-o DPkg::Lock::Timeout=300)
# Fonts: the page's text must render (and be measured for contrast) as a person sees it.
if ! { apt-get "${lock[@]}" update -qq &&
    apt-get "${lock[@]}" install -y -qq --no-install-recommends chromium fonts-dejavu-core; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-deps: apt-get failed installing chromium" >&2
    exit 1
fi
have || { echo "install-deps: chromium still missing after apt-get install" >&2; exit 1; }
echo "install-deps: installed; $(chromium --version 2>/dev/null || echo chromium)"
