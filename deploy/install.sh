#!/usr/bin/env bash
# Install the edgesight agent as a systemd service on Raspberry Pi OS (bookworm, arm64), a Jetson
# (JetPack) or any Debian: a system user, the state folder, a virtualenv with the runtime that
# fits the board, the unit from systemd/, a starter config, and a local mosquitto if asked.
#
# Every action is one line "VERB KIND TARGET [details]" (VERB: create install update fix remove
# run | ok keep skip warn), the same in a dry run, so people and tests can read the plan.
# Idempotent: a second run finds everything in place, prints only ok/keep/skip lines and says
# "nothing to change". Usage: deploy/install.sh --help.
set -Eeuo pipefail
trap 'echo "install.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

readonly SERVICE=edge-agent.service
readonly SERVICE_USER=edgesight
# systemd/edge-agent.service runs $VENV_DIR/bin/edge-agent; check_unit says when it does not.
readonly VENV_DIR=/opt/edgesight
readonly CONF_DIR=/etc/edgesight
readonly CONF_FILE=/etc/edgesight/agent.yaml
readonly STATE_DIR=/var/lib/edgesight
readonly PRIVATE_STATE_DIR=/var/lib/private/edgesight
readonly UNIT_FILE=/etc/systemd/system/edge-agent.service
readonly MOSQUITTO_CONF=/etc/mosquitto/conf.d/edgesight.conf
# What the venv was built from; a rerun rebuilds it only when this line would change.
readonly VENV_STAMP=.edgesight-install
# The groups that own camera devices (/dev/video*) on every board, and /dev/nvhost-* and
# /dev/nvmap on a Jetson (L4T's udev rules), /dev/vchiq on a Pi.
readonly DEVICE_GROUPS=(video)
readonly MOSQUITTO_LISTENER="listener 1883 127.0.0.1"

src_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly src_dir

usage() {
  cat <<EOF
Usage: sudo deploy/install.sh [options]

Installs the edgesight agent from this source tree ($src_dir) as the systemd service
$SERVICE. Run it again to update; it changes only what differs.

  --platform pi|jetson|generic  override detection (Raspberry Pi: tflite extra; Jetson: gpu
                                extra; generic: onnx extra)
  --extras LIST                 pip extras to install instead, e.g. tflite,onnx
  --from-pypi                   install edgesight==$(tree_version) from PyPI, not this tree
  --pip-arg ARG                 pass ARG to pip install (repeatable), e.g.
                                --pip-arg=--extra-index-url=URL
  --python PY                   interpreter for the venv (default: python3.13..python3.11)
  --skip-venv                   leave the virtualenv alone (neither create nor update it)
  --with-mosquitto              install mosquitto, listening on 127.0.0.1:1883 only
  --no-start                    enable the service but do not start or restart it
  --root DIR                    install into DIR (a throwaway root or an image): every path is
                                prefixed; no user, owners, apt or systemctl (said as 'skip')
  --dry-run                     print every action, change nothing
  --uninstall                   remove what was installed; keep the state folder, the user, a
                                config you changed and the mosquitto package
  --purge                       with --uninstall (or alone): also remove the state folder, the
                                config and the user
  -h, --help                    this text
EOF
}

die() { echo "install.sh: $*" >&2; exit 2; }

tree_version() {
  sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$src_dir/edge_agent/__init__.py"
}

# ---------------------------------------------------------------------------- arguments
platform="" extras="" from_pypi=0 python_bin="" skip_venv=0 with_mosquitto=0 no_start=0
root="/" dry_run=0 uninstall=0 purge=0
pip_args=()
# takes_value "$@": the option's value, from --opt=value or the next argument.
takes_value() {
  if [ -z "$value" ]; then
    [ $# -ge 2 ] || die "$opt needs a value (see --help)"
    value=$2; shift_extra=1
  fi
}
while [ $# -gt 0 ]; do
  opt=$1 value=""
  case $opt in
    --*=*) value=${opt#*=}; opt=${opt%%=*} ;;
  esac
  shift_extra=0
  case $opt in
    --platform) takes_value "$@"; platform=$value
      case $platform in pi|jetson|generic) ;;
        *) die "--platform: expected pi, jetson or generic, got '$platform'" ;; esac ;;
    --extras) takes_value "$@"; extras=$value
      [[ $extras =~ ^[a-z0-9-]+(,[a-z0-9-]+)*$ ]] ||
        die "--extras: expected extras separated by commas (e.g. tflite,onnx), got '$extras'" ;;
    --from-pypi) from_pypi=1 ;;
    --pip-arg) takes_value "$@"; pip_args+=("$value") ;;
    --python) takes_value "$@"; python_bin=$value ;;
    --skip-venv) skip_venv=1 ;;
    --with-mosquitto) with_mosquitto=1 ;;
    --no-start) no_start=1 ;;
    --root) takes_value "$@"; root=$value
      [ -d "$root" ] || die "--root: '$root' is not a directory" ;;
    --dry-run) dry_run=1 ;;
    --uninstall) uninstall=1 ;;
    --purge) uninstall=1; purge=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift $((1 + shift_extra))
done
root=$(cd "$root" && pwd)
in_root=0
[ "$root" = / ] || in_root=1
readonly platform extras from_pypi python_bin skip_venv with_mosquitto no_start root in_root
readonly dry_run uninstall purge

if [ "$dry_run" = 0 ] && [ "$in_root" = 0 ] && [ "$(id -u)" != 0 ]; then
  die "run as root (sudo), or with --dry-run to see the plan, or --root DIR"
fi

# ---------------------------------------------------------------------------- output
changes=0
# say VERB KIND TARGET [details]: one action line; VERB decides whether it counts as a change.
say() {
  local verb=$1 kind=$2 target=$3
  shift 3
  printf '%-8s %-9s %s%s\n' "$verb" "$kind" "$target" "${*:+ $*}"
  case $verb in create|install|update|fix|remove|run) changes=$((changes + 1)) ;; esac
}
# Run a command unless this is a dry run.
do_() { [ "$dry_run" = 1 ] || "$@"; }
# The path on disk of an installed path: under --root every path is prefixed.
at() { printf '%s%s' "${root%/}" "$1"; }

systemd_running() { [ "$in_root" = 0 ] && [ -d /run/systemd/system ]; }
# Why systemctl lines are skipped, or empty when they run.
systemctl_skip_reason() {
  if [ "$in_root" = 1 ]; then echo "(--root: the target system enables it at its first boot)"
  elif ! systemd_running; then echo "(systemd is not running here)"
  fi
}
user_exists() { [ "$in_root" = 0 ] && id -u "$SERVICE_USER" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------- files
# -L: with DynamicUser=, systemd moves the state folder to /var/lib/private/ and leaves a symlink.
mode_of() { stat -L -c %a "$1"; }
owner_of() { stat -L -c %U:%G "$1"; }

# Set mode and (outside --root, once the user exists) owner; report what was wrong.
fix_attrs() {
  local kind=$1 path=$2 mode=$3 owner=$4 disk
  disk=$(at "$path")
  local wrong=()
  [ "$(mode_of "$disk")" = "$mode" ] || wrong+=("mode $(mode_of "$disk")")
  if [ "$in_root" = 0 ] && { user_exists || [ "$owner" = root:root ]; }; then
    [ "$(owner_of "$disk")" = "$owner" ] || wrong+=("owner $(owner_of "$disk")")
  fi
  if [ ${#wrong[@]} = 0 ]; then
    return 1
  fi
  say fix "$kind" "$path" "$mode $owner (was ${wrong[*]})"
  set_attrs "$disk" "$mode" "$owner"
}

set_attrs() {
  local disk=$1 mode=$2 owner=$3
  do_ chmod "$mode" "$disk"
  if [ "$in_root" = 0 ] && { user_exists || [ "$owner" = root:root ]; }; then
    do_ chown "$owner" "$disk"
  fi
}

ensure_dir() {
  local path=$1 mode=$2 owner=$3 disk
  disk=$(at "$path")
  if [ ! -d "$disk" ]; then
    say create dir "$path" "$mode $owner"
    do_ mkdir -p "$disk"
    set_attrs "$disk" "$mode" "$owner"
  elif ! fix_attrs dir "$path" "$mode" "$owner"; then
    say ok dir "$path"
  fi
}

# ensure_file SRC DEST MODE OWNER POLICY [ORIGIN]: POLICY replace (ours: kept equal to SRC) or
# keep (the user's once written: never overwritten); ORIGIN says where SRC came from.
ensure_file() {
  local src=$1 path=$2 mode=$3 owner=$4 policy=$5 origin=${6:-$1} disk verb
  disk=$(at "$path")
  if [ -f "$disk" ] && cmp -s "$src" "$disk"; then
    fix_attrs file "$path" "$mode" "$owner" || say ok file "$path"
    return
  fi
  if [ -e "$disk" ] && [ "$policy" = keep ]; then
    say keep file "$path" "(present; a config is never overwritten)"
    fix_attrs file "$path" "$mode" "$owner" || true
    return
  fi
  verb=install
  [ -e "$disk" ] && verb=update
  say "$verb" file "$path" "$mode $owner (from $origin)"
  if [ "$dry_run" = 0 ]; then
    mkdir -p "$(dirname "$disk")"
    # Write beside it and rename, so the service never reads half a file.
    install -m "$mode" -T "$src" "$disk.install-tmp"
    set_attrs "$disk.install-tmp" "$mode" "$owner"
    mv -f "$disk.install-tmp" "$disk"
  fi
}

remove_file() {
  local path=$1 disk
  disk=$(at "$path")
  if [ -e "$disk" ] || [ -L "$disk" ]; then
    say remove file "$path"
    do_ rm -f "$disk"
  else
    say ok file "$path" "(absent)"
  fi
}

remove_tree() {
  local kind=$1 path=$2 disk
  disk=$(at "$path")
  if [ -e "$disk" ]; then
    say remove "$kind" "$path"
    do_ rm -rf "$disk"
  else
    say ok "$kind" "$path" "(absent)"
  fi
}

# Remove a folder the installer made, only when nothing is left in it.
remove_dir_if_empty() {
  local path=$1 disk
  disk=$(at "$path")
  [ -d "$disk" ] || return 0
  if [ -z "$(ls -A "$disk")" ] || [ "$dry_run" = 1 ]; then
    say remove dir "$path" "(if empty)"
    do_ rmdir "$disk"
  else
    say keep dir "$path" "(not empty)"
  fi
}

# ---------------------------------------------------------------------------- platform
detect_platform() {
  local model_file tegra
  model_file=$(at /proc/device-tree/model)
  tegra=$(at /etc/nv_tegra_release)
  if [ -n "$platform" ]; then
    echo "$platform (--platform)"
  elif [ -r "$model_file" ] && tr -d '\0' <"$model_file" | grep -q "Raspberry Pi"; then
    echo "pi ($(tr -d '\0' <"$model_file") in /proc/device-tree/model)"
  elif [ -e "$tegra" ]; then
    echo "jetson (/etc/nv_tegra_release: $(head -n1 "$tegra" | cut -c1-60))"
  else
    echo "generic (no Raspberry Pi model, no /etc/nv_tegra_release)"
  fi
}

extras_for() {
  case $1 in
    pi) echo tflite ;;       # LiteRT: XNNPACK on the Pi's Cortex-A cores
    jetson) echo gpu ;;      # onnxruntime-gpu: CUDA / TensorRT execution providers
    *) echo onnx ;;
  esac
}

pick_python() {
  local py
  if [ -n "$python_bin" ]; then
    command -v "$python_bin" >/dev/null || die "--python: '$python_bin' not found"
    "$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
      die "--python: $python_bin is older than 3.11, which edgesight needs"
    echo "$python_bin"; return
  fi
  for py in python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null 2>&1 &&
       "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$py"; return
    fi
  done
  die "edgesight needs Python 3.11 or newer; python3 is $(python3 --version 2>&1)." \
      "On JetPack 6 (Ubuntu 22.04): apt-get install python3.11 python3.11-venv, then --python python3.11"
}

# ---------------------------------------------------------------------------- steps
ensure_user() {
  if [ "$in_root" = 1 ]; then
    say skip user "$SERVICE_USER" "(--root: create it and set owners on the target system)"
    return
  fi
  local groups=() g
  for g in "${DEVICE_GROUPS[@]}"; do
    getent group "$g" >/dev/null && groups+=("$g")
  done
  if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    say create user "$SERVICE_USER" "(system, no login, home $STATE_DIR, groups ${groups[*]:-none})"
    do_ useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin ${groups[@]:+--groups "$(IFS=,; echo "${groups[*]}")"} \
        "$SERVICE_USER"
    return
  fi
  local missing=()
  for g in "${groups[@]}"; do
    id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx "$g" || missing+=("$g")
  done
  if [ ${#missing[@]} = 0 ]; then
    say ok user "$SERVICE_USER"
  else
    say fix user "$SERVICE_USER" "(add to groups ${missing[*]})"
    do_ usermod -aG "$(IFS=,; echo "${missing[*]}")" "$SERVICE_USER"
  fi
}

# A fingerprint of what pip would install: the spec, pip's extra arguments and, for a source
# tree, the content of every packaged file.
venv_want() {
  local spec=$1 tree="pypi"
  if [ "$from_pypi" = 0 ]; then
    tree=$(cd "$src_dir" && find -L pyproject.toml edge_agent trainer -type f \
             ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z |
           xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
  fi
  echo "spec=$spec tree=$tree pip_args=${pip_args[*]:-}"
}

ensure_venv() {
  local want_extras=$1 spec py disk_venv stamp want
  if [ "$from_pypi" = 1 ]; then
    spec="edgesight[$want_extras]==$(tree_version)"
  else
    spec="${src_dir}[$want_extras]"
  fi
  if [ "$skip_venv" = 1 ]; then
    say skip venv "$VENV_DIR" "(--skip-venv)"
    return
  fi
  disk_venv=$(at "$VENV_DIR")
  if [ -x "$disk_venv/bin/python" ]; then
    say ok venv "$VENV_DIR"
  else
    py=$(pick_python)
    say create venv "$VENV_DIR" "($py, Python $("$py" -c 'import platform; print(platform.python_version())'))"
    if [ "$dry_run" = 0 ]; then
      mkdir -p "$(dirname "$disk_venv")"
      if ! "$py" -m venv "$disk_venv" 2>/dev/null; then
        rm -rf "$disk_venv"
        # Debian, Raspberry Pi OS and Ubuntu ship venv (ensurepip) as a separate package.
        [ "$in_root" = 0 ] || die "$py cannot make a venv (no ensurepip): apt-get install python3-venv"
        say install apt python3-venv "(the venv module of $py)"
        apt_install "python3-venv" "$(basename "$py")-venv"
        "$py" -m venv "$disk_venv"
      fi
    fi
  fi
  stamp="$disk_venv/$VENV_STAMP"
  want=$(venv_want "$spec")
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say ok pip "$spec" "(installed in $VENV_DIR)"
    return
  fi
  if [ "$platform_name" = jetson ] && [[ ,$want_extras, == *,gpu,* ]] &&
     [[ " ${pip_args[*]:-} " != *index-url* ]]; then
    say warn pip onnxruntime-gpu "(PyPI has no aarch64 wheel: pass" \
      "--pip-arg=--extra-index-url=URL of NVIDIA's wheels for your JetPack; docs/install.md)"
  fi
  say install pip "$spec" "(into $VENV_DIR${pip_args[*]:+, pip args: ${pip_args[*]}})"
  [ "$dry_run" = 0 ] || return 0
  local log="$disk_venv/pip.log" target=$spec
  if [ "$from_pypi" = 0 ]; then
    # pip builds a local tree in place (build/, *.egg-info): build from a copy, so a checkout
    # owned by its user gets no root-owned files.
    build_copy=$(mktemp -d)
    trap 'rm -rf "$build_copy"' EXIT
    cp -RL "$src_dir/pyproject.toml" "$src_dir/README.md" "$src_dir/edge_agent" \
      "$src_dir/trainer" "$build_copy/"
    target="${build_copy}[$want_extras]"
  fi
  # Quiet unless it fails; the log stays in the venv either way.
  if ! { "$disk_venv/bin/python" -m pip install -q --upgrade pip &&
         "$disk_venv/bin/python" -m pip install -q ${pip_args[@]:+"${pip_args[@]}"} "$target"
       } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install.sh: pip could not install $spec (log: $log)" >&2
    [ "$platform_name" != jetson ] || echo "install.sh: on a Jetson, onnxruntime-gpu comes" \
      "from NVIDIA's wheel index (--pip-arg=--extra-index-url=URL), or use --extras onnx" >&2
    exit 1
  fi
  echo "$want" >"$stamp"
}

apt_install() {
  if [ "$dry_run" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
  fi
}

ensure_mosquitto() {
  local conf
  if [ "$in_root" = 1 ]; then
    say skip apt mosquitto "(--root: install the package on the target system)"
  elif dpkg-query -W -f='${Status}' mosquitto 2>/dev/null | grep -q "install ok installed"; then
    say ok apt mosquitto
  else
    say install apt mosquitto
    apt_install mosquitto
  fi
  conf=$(mktemp)
  mosquitto_conf >"$conf"
  local before=$changes
  ensure_file "$conf" "$MOSQUITTO_CONF" 644 root:root replace "install.sh: $MOSQUITTO_LISTENER"
  rm -f "$conf"
  if [ -n "$(systemctl_skip_reason)" ]; then
    say skip systemctl "restart mosquitto" "$(systemctl_skip_reason)"
  elif [ "$changes" != "$before" ] || ! systemctl is-active --quiet mosquitto; then
    say run systemctl "enable --now mosquitto; restart mosquitto"
    do_ systemctl enable --now mosquitto
    do_ systemctl restart mosquitto
  else
    say ok systemctl "mosquitto (active)"
  fi
}

mosquitto_conf() {
  cat <<EOF
# Written by edgesight's deploy/install.sh --with-mosquitto: a broker for this device only.
# Only programs on this machine can connect. Before opening it to the network, add passwords
# or TLS and per-device ACLs (docs/mqtt-security.md).
$MOSQUITTO_LISTENER
allow_anonymous true
EOF
}

# The unit is another part's file: say when it would not run this venv or read this config.
check_unit() {
  local unit=$1 exec_start
  exec_start=$(sed -n 's/^ExecStart=//p' "$unit" | head -n1)
  [[ $exec_start == *"$VENV_DIR/bin/edge-agent"* ]] ||
    say warn file "$UNIT_FILE" "(ExecStart does not run $VENV_DIR/bin/edge-agent: '$exec_start')"
  [[ $exec_start == *"$CONF_FILE"* ]] ||
    say warn file "$UNIT_FILE" "(ExecStart does not read $CONF_FILE: '$exec_start')"
  # The config is 0640 root:edgesight: a service running as anyone else cannot read it (with
  # DynamicUser=, User=edgesight makes systemd use the static user this script creates).
  grep -qx "User=$SERVICE_USER" "$unit" ||
    say warn file "$UNIT_FILE" "(no User=$SERVICE_USER: the service could not read $CONF_FILE)"
}

ensure_service() {
  local unit_changed=$1 venv_changed=$2 reason
  reason=$(systemctl_skip_reason)
  if [ -n "$reason" ]; then
    say skip systemctl "daemon-reload; enable $SERVICE" "$reason"
    return
  fi
  if [ "$unit_changed" = 1 ]; then
    say run systemctl daemon-reload
    do_ systemctl daemon-reload
  fi
  if systemctl is-enabled --quiet "$SERVICE" 2>/dev/null; then
    say ok systemctl "enable $SERVICE"
  else
    say run systemctl "enable $SERVICE"
    do_ systemctl enable --quiet "$SERVICE"
  fi
  if [ "$no_start" = 1 ]; then
    say skip systemctl "start $SERVICE" "(--no-start)"
    return
  fi
  local active=0
  systemctl is-active --quiet "$SERVICE" && active=1
  if [ "$active" = 1 ] && [ "$unit_changed" = 0 ] && [ "$venv_changed" = 0 ]; then
    say ok systemctl "$SERVICE (active)"
  elif [ "$dry_run" = 1 ]; then
    say run systemctl "restart $SERVICE" "(if check-config accepts $CONF_FILE)"
  elif runuser -u "$SERVICE_USER" -- "$VENV_DIR/bin/edge-agent" check-config "$CONF_FILE" \
       >/dev/null 2>&1; then
    say run systemctl "restart $SERVICE"
    systemctl restart "$SERVICE"
  else
    say skip systemctl "start $SERVICE" "(check-config refuses $CONF_FILE: edit it, run" \
      "'sudo -u $SERVICE_USER $VENV_DIR/bin/edge-agent check-config $CONF_FILE', then" \
      "'sudo systemctl start edge-agent')"
  fi
}

install_all() {
  local unit_src="$src_dir/systemd/edge-agent.service" want_extras before
  [ -f "$unit_src" ] || die "the unit file $unit_src is missing from the source tree"
  [ -f "$src_dir/deploy/starter.yaml" ] || die "$src_dir/deploy/starter.yaml is missing"
  want_extras=${extras:-$(extras_for "$platform_name")}
  echo "extras   $want_extras (pip extras${extras:+ from --extras}${extras:- for $platform_name})"
  # The userland decides which wheels fit: 32-bit Raspberry Pi OS often runs a 64-bit kernel.
  local arch
  arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
  if [ "$platform_name" = pi ] && [ "$in_root" = 0 ] && [[ $arch != @(arm64|aarch64) ]]; then
    say warn platform "$arch" "(LiteRT has wheels for 64-bit Raspberry Pi OS (arm64) only)"
  fi
  ensure_user
  ensure_dir "$STATE_DIR" 750 "$SERVICE_USER:$SERVICE_USER"
  before=$changes
  ensure_venv "$want_extras"
  local venv_changed=$((changes != before))
  ensure_dir "$CONF_DIR" 750 "root:$SERVICE_USER"
  ensure_file "$src_dir/deploy/starter.yaml" "$CONF_FILE" 640 "root:$SERVICE_USER" keep
  before=$changes
  check_unit "$unit_src"
  ensure_file "$unit_src" "$UNIT_FILE" 644 root:root replace
  local unit_changed=$((changes != before))
  [ "$with_mosquitto" = 0 ] || ensure_mosquitto
  ensure_service "$unit_changed" "$venv_changed"
}

uninstall_all() {
  local reason
  reason=$(systemctl_skip_reason)
  if [ -n "$reason" ]; then
    say skip systemctl "disable --now $SERVICE" "$reason"
  elif systemctl is-enabled --quiet "$SERVICE" 2>/dev/null ||
       systemctl is-active --quiet "$SERVICE" 2>/dev/null; then
    say run systemctl "disable --now $SERVICE"
    do_ systemctl disable --now --quiet "$SERVICE"
  else
    say ok systemctl "$SERVICE (not enabled, not running)"
  fi
  local unit_there=0
  [ -e "$(at "$UNIT_FILE")" ] && unit_there=1
  remove_file "$UNIT_FILE"
  if [ "$unit_there" = 1 ] && [ -z "$reason" ]; then
    say run systemctl daemon-reload
    do_ systemctl daemon-reload
  fi
  remove_tree venv "$VENV_DIR"
  local conf
  conf=$(at "$CONF_FILE")
  if [ -e "$conf" ] && [ "$purge" = 0 ] && ! cmp -s "$src_dir/deploy/starter.yaml" "$conf"; then
    say keep file "$CONF_FILE" "(changed since installed: yours; --purge removes it)"
  else
    remove_file "$CONF_FILE"
  fi
  remove_dir_if_empty "$CONF_DIR"
  local mconf
  mconf=$(mktemp)
  mosquitto_conf >"$mconf"
  if [ -e "$(at "$MOSQUITTO_CONF")" ]; then
    if cmp -s "$mconf" "$(at "$MOSQUITTO_CONF")" || [ "$purge" = 1 ]; then
      remove_file "$MOSQUITTO_CONF"
      if [ -z "$reason" ] && systemctl is-active --quiet mosquitto; then
        say run systemctl "restart mosquitto"
        do_ systemctl restart mosquitto
      fi
    else
      say keep file "$MOSQUITTO_CONF" "(changed since installed; --purge removes it)"
    fi
  fi
  rm -f "$mconf"
  if [ "$in_root" = 0 ] && dpkg-query -W -f='${Status}' mosquitto 2>/dev/null |
       grep -q "install ok installed"; then
    say keep apt mosquitto "(other programs may use it: apt-get purge mosquitto)"
  fi
  if [ "$purge" = 1 ]; then
    [ ! -e "$(at "$CONF_DIR")" ] || remove_tree dir "$CONF_DIR"
    remove_tree dir "$STATE_DIR"
    # Where systemd keeps it for a DynamicUser= service (/var/lib/edgesight is then a symlink).
    [ ! -e "$(at "$PRIVATE_STATE_DIR")" ] || remove_tree dir "$PRIVATE_STATE_DIR"
    if user_exists; then
      say remove user "$SERVICE_USER"
      do_ userdel "$SERVICE_USER"
    elif [ "$in_root" = 0 ]; then
      say ok user "$SERVICE_USER" "(absent)"
    fi
  else
    [ ! -e "$(at "$STATE_DIR")" ] || say keep dir "$STATE_DIR" "(models, outbox, tallies: --purge removes it)"
    ! user_exists || say keep user "$SERVICE_USER" "(owns $STATE_DIR: --purge removes it)"
  fi
}

# ---------------------------------------------------------------------------- main
[ "$dry_run" = 0 ] || echo "dry-run  nothing is changed; these are the actions a real run takes"
[ "$in_root" = 0 ] || echo "root     $root (every path below is inside it)"
platform_line=$(detect_platform)
platform_name=${platform_line%% *}
readonly platform_name
echo "platform $platform_line"
if [ "$uninstall" = 1 ]; then
  uninstall_all
else
  install_all
fi
if [ "$changes" = 0 ]; then
  echo "summary  nothing to change"
elif [ "$dry_run" = 1 ]; then
  echo "summary  $changes changes planned (dry run: nothing changed)"
else
  echo "summary  $changes changes made"
fi
