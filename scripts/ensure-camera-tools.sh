#!/usr/bin/env bash
# Install the Debian packages the camera-fault tests need when they are missing: GStreamer's
# RTSP server library with its GObject introspection data (the tests' RTSP camera,
# tests/helpers/rtsp_server.py, runs it under the SYSTEM /usr/bin/python3, since python3-gi
# binds the system interpreter, not the venv), appsrc and the converters (base),
# RTP payloaders (good), h264parse (bad) and the x264 encoder (ugly, on Debian 12).
set -euo pipefail
SYSTEM_PYTHON=/usr/bin/python3
probe='import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("appsrc", "videoconvert", "x264enc", "h264parse", "rtph264pay")
           if Gst.ElementFactory.find(e) is None]
raise SystemExit(1 if missing else 0)'
if [ -x "$SYSTEM_PYTHON" ] && "$SYSTEM_PYTHON" -c "$probe" >/dev/null 2>&1; then exit 0; fi
packages=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
          gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly)
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
echo "installing ${packages[*]} (Debian packages)" >&2
as_root apt-get update -qq
DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${packages[@]}"
"$SYSTEM_PYTHON" -c "$probe" || { echo "GStreamer RTSP server still unusable after install" >&2; exit 1; }
