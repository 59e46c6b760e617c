#!/usr/bin/env bash
# Installs what `cargo xtask e2e --scale-out` (and the cluster tests) run besides our own
# binaries: redis-server and nginx, from Debian's packages. Idempotent: exits at once when both
# are already there. Needs root (CI runs as root).
#
# The packages' system services are NOT started: the scenario starts its own redis-server and
# nginx on loopback ports in a temporary directory. A policy-rc.d answering 101 ("action
# forbidden") keeps the postinst scripts from starting them; if one is running anyway (a host
# whose own policy allowed it), it is stopped.
set -euo pipefail

have() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}

missing=()
have redis-server || missing+=(redis-server)
have nginx || missing+=(nginx)
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: redis-server and nginx already installed"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: ${missing[*]} missing; run this script as root (it uses apt-get)" >&2
    exit 1
fi

# Keep the postinst scripts from starting system services; remove our policy file afterwards
# (an existing one, e.g. a container image's, is left as it was).
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi

echo "install-deps: installing ${missing[*]} from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# `nginx` is the core package (Debian bookworm: nginx-light only adds the echo module to it).
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# Whatever the policy, no system redis or nginx is left running on the default ports.
for service in redis-server nginx; do
    if [ -x "/etc/init.d/$service" ]; then
        service "$service" stop >/dev/null 2>&1 || true
    fi
done

for tool in redis-server nginx; do
    have "$tool" || { echo "install-deps: $tool still missing after apt-get install" >&2; exit 1; }
done
echo "install-deps: $(redis-server --version | cut -d' ' -f1-3); $( (nginx -v || /usr/sbin/nginx -v) 2>&1)"
