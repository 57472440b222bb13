#!/usr/bin/env bash
# Install the mosquitto broker (Debian package) when it is missing. Tests start their own
# broker on a free loopback port; no service is enabled.
set -euo pipefail
if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then exit 0; fi
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
echo "installing mosquitto (Debian package)" >&2
as_root apt-get update -qq
DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq mosquitto mosquitto-clients
# Debian starts the service on install where systemd runs; the tests do not need it.
as_root systemctl disable --now mosquitto >/dev/null 2>&1 || true
