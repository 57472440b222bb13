#!/usr/bin/env bash
# Install the Debian packages the tests drive for real when they are missing: the mosquitto
# broker (tests start their own on a free loopback port; no service is enabled), systemd's
# systemd-analyze (the unit's security score; systemd does not become PID 1 by being
# installed) and shellcheck (deploy/install.sh).
set -euo pipefail
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto mosquitto-clients)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
if [ "${#missing[@]}" -eq 0 ]; then exit 0; fi
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
echo "installing ${missing[*]} (Debian packages)" >&2
as_root apt-get update -qq
DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}"
# Debian starts mosquitto on install where systemd runs; the tests do not need it.
as_root systemctl disable --now mosquitto >/dev/null 2>&1 || true
