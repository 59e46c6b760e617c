#!/usr/bin/env bash
# Installs what `cargo xtask e2e --scale-out` (and the cluster tests) run besides our own
# binaries: redis-server and nginx, from Debian's packages. Idempotent: exits at once when
# they are already there. Needs root and apt-get (CI runs as root on Debian).
#
#   bash xtask/scale-out/install-deps.sh                 # both
#   bash xtask/scale-out/install-deps.sh redis-server    # only what the cluster tests need
#
# The cluster tests run it themselves (once, under a lock in target/) when redis-server is
# missing. Quiet on success: one line saying what is there.
#
# The packages' system services are NOT started: the scenario starts its own redis-server and
# nginx on loopback ports in a temporary directory. A policy-rc.d answering 101 ("action
# forbidden") keeps the postinst scripts from starting them; if one is running anyway (a host
# whose own policy allowed it), it is stopped.
set -euo pipefail

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(redis-server nginx)
for tool in "${wanted[@]}"; do
    case "$tool" in
        redis-server | nginx) ;;
        *) echo "install-deps: unknown tool '$tool' (redis-server, nginx)" >&2; exit 2 ;;
    esac
done

have() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}

missing=()
for tool in "${wanted[@]}"; do
    have "$tool" || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: ${wanted[*]} already installed"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: ${missing[*]} missing; run this script as root (it uses apt-get):" \
        "sudo bash xtask/scale-out/install-deps.sh ${wanted[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: ${missing[*]} missing and no apt-get here (not Debian/Ubuntu):" \
        "install ${missing[*]} with this system's package manager" >&2
    exit 1
fi

# Keep the postinst scripts from starting system services; remove our policy file afterwards
# (an existing one, e.g. a container image's, is left as it was).
policy=/usr/sbin/policy-rc.d
log=$(mktemp)
cleanup=(rm -f "$log")
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    cleanup+=("$policy")
fi
trap '"${cleanup[@]}"' EXIT

echo "install-deps: installing ${missing[*]} from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
# Another apt run (a parallel installer, unattended upgrades) holds the lock: wait for it.
lock=(-o DPkg::Lock::Timeout=300)
# Output only when something fails, so a test run that installs Redis stays readable.
if ! { apt-get "${lock[@]}" update -qq &&
    # `nginx` is the core package (Debian bookworm: nginx-light only adds the echo module).
    apt-get "${lock[@]}" install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-deps: apt-get failed installing ${missing[*]}" >&2
    exit 1
fi

# Whatever the policy, no system redis or nginx is left running on the default ports.
for service in redis-server nginx; do
    if [ -x "/etc/init.d/$service" ]; then
        service "$service" stop >/dev/null 2>&1 || true
    fi
done

for tool in "${wanted[@]}"; do
    have "$tool" || { echo "install-deps: $tool still missing after apt-get install" >&2; exit 1; }
done
versions=()
have redis-server && versions+=("$( (redis-server --version || /usr/bin/redis-server --version) 2>&1 | cut -d' ' -f1-3)")
have nginx && versions+=("$( (nginx -v || /usr/sbin/nginx -v) 2>&1)")
echo "install-deps: installed; $(IFS=';'; echo "${versions[*]}")"
