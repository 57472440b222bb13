"""deploy/install.sh: the plan it prints, a real install into a throwaway root, idempotence,
and an uninstall that leaves nothing behind.

The installer runs for real (bash, pip, venv); only what cannot exist here is left out: a
root-owned install into / with useradd and systemctl (CI machines and this one have no systemd
as PID 1), which the dry run shows instead. Each test runs the script from a copy of the source
tree in tmp_path, so pip's build folders and a unit placeholder never touch the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest

from edge_agent import __version__
from edge_agent.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path("deploy") / "install.sh"
UNIT = Path("etc/systemd/system/edge-agent.service")
CONF = Path("etc/edgesight/agent.yaml")
STATE = Path("var/lib/edgesight")
VENV = Path("opt/edgesight")
MOSQUITTO_CONF = Path("etc/mosquitto/conf.d/edgesight.conf")
IGNORE_CACHES = shutil.ignore_patterns("__pycache__", "*.pyc")
CHANGE_VERBS = {"create", "install", "update", "fix", "remove", "run"}
VERBS = CHANGE_VERBS | {"ok", "keep", "skip", "warn"}
# Stands in for systemd/edge-agent.service while that file is written beside this one; it has
# the two lines the installer reads.
PLACEHOLDER_UNIT = """\
[Unit]
Description=edgesight agent (test placeholder)
[Service]
Type=notify
ExecStart=/opt/edgesight/bin/edge-agent run --config /etc/edgesight/agent.yaml
DynamicUser=yes
User=edgesight
Group=edgesight
[Install]
WantedBy=multi-user.target
"""


class Action(NamedTuple):
    verb: str
    kind: str
    target: str
    note: str


class Run(NamedTuple):
    code: int
    out: str
    err: str

    @property
    def actions(self) -> list[Action]:
        found = []
        for line in self.out.splitlines():
            parts = line.split(None, 3)
            if parts and parts[0] in VERBS:
                found.append(Action(*parts, *[""] * (4 - len(parts))))
        return found

    @property
    def changes(self) -> list[Action]:
        return [a for a in self.actions if a.verb in CHANGE_VERBS]

    def one(self, kind: str, target: str) -> Action:
        hits = [a for a in self.actions if a.kind == kind and a.target == target]
        assert len(hits) == 1, f"expected one {kind} {target} line in:\n{self.out}"
        return hits[0]

    def header(self, name: str) -> str:
        for line in self.out.splitlines():
            if line.startswith(name + " "):
                return line[len(name) :].strip()
        raise AssertionError(f"no {name} line in:\n{self.out}")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A source tree as install.sh sees it: the checkout's files, and the unit (the real one
    once it exists in the checkout, else the placeholder)."""
    tree = tmp_path / "src"
    tree.mkdir()
    for name in ("deploy", "edge_agent", "trainer", "pyproject.toml", "README.md"):
        (tree / name).symlink_to(ROOT / name)
    (tree / "systemd").mkdir()
    real_unit = ROOT / "systemd" / "edge-agent.service"
    if real_unit.exists():
        shutil.copy(real_unit, tree / "systemd" / "edge-agent.service")
    else:
        (tree / "systemd" / "edge-agent.service").write_text(PLACEHOLDER_UNIT)
    return tree


@pytest.fixture
def target(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


def install(src: Path, *args: str | Path) -> Run:
    proc = subprocess.run(
        ["bash", str(src / SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def ok(run: Run) -> Run:
    assert run.code == 0, f"exit {run.code}\n{run.out}\n{run.err}"
    return run


def files_under(root: Path) -> dict[str, int]:
    """Every file below root with its mtime: what a run changed, and what is left behind."""
    return {
        str(p.relative_to(root)): p.lstat().st_mtime_ns
        for p in sorted(root.rglob("*"))
        if not p.is_dir()
    }


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


# ----------------------------------------------------------------------------- the dry run


@pytest.fixture
def fresh_host() -> None:
    if any(Path("/", p).exists() for p in (CONF.parent, VENV, UNIT)):
        pytest.skip("edgesight is installed on this machine: a dry run would plan no changes")


@pytest.mark.usefixtures("fresh_host")
def test_dry_run_for_a_pi_plans_litert_the_unit_the_user_and_the_config(src: Path) -> None:
    before = files_under(src)
    run = ok(install(src, "--dry-run", "--platform", "pi"))
    assert run.header("platform") == "pi (--platform)"
    assert run.header("extras").startswith("tflite ")
    assert run.one("pip", f"{src}[tflite]").verb == "install"
    assert run.one("venv", "/opt/edgesight").verb == "create"
    unit = run.one("file", "/etc/systemd/system/edge-agent.service")
    assert unit.verb == "install"
    assert (
        unit.note.startswith("644 root:root (from ") and "systemd/edge-agent.service" in unit.note
    )
    conf = run.one("file", "/etc/edgesight/agent.yaml")
    assert (conf.verb, conf.note.split()[:2]) == ("install", ["640", "root:edgesight"])
    state = run.one("dir", "/var/lib/edgesight")
    assert (state.verb, state.note) == ("create", "750 edgesight:edgesight")
    assert run.one("user", "edgesight").verb in {"create", "ok"}
    # The dry run says what it would do to systemd, or why it cannot here.
    assert any(
        a.kind == "systemctl" and "enable edge-agent.service" in f"{a.target} {a.note}"
        for a in run.actions
    )
    assert run.out.splitlines()[-1].startswith("summary  ")
    assert "(dry run: nothing changed)" in run.out
    assert files_under(src) == before
    assert not Path("/opt/edgesight").exists() and not Path("/etc/edgesight").exists()


@pytest.mark.usefixtures("fresh_host")
def test_dry_run_for_a_jetson_plans_onnxruntime_gpu_and_says_where_it_comes_from(
    src: Path,
) -> None:
    run = ok(install(src, "--dry-run", "--platform", "jetson"))
    assert run.header("extras").startswith("gpu ")
    assert run.one("pip", f"{src}[gpu]").verb == "install"
    assert "extra-index-url" in run.one("pip", "onnxruntime-gpu").note
    index = "--pip-arg=--extra-index-url=https://wheels.example.invalid/jp6"
    with_index = ok(install(src, "--dry-run", "--platform", "jetson", index))
    assert not [a for a in with_index.actions if a.verb == "warn" and a.kind == "pip"]
    assert (
        "pip args: --extra-index-url=https://wheels.example.invalid/jp6"
        in with_index.one("pip", f"{src}[gpu]").note
    )


@pytest.mark.parametrize(
    ("files", "platform", "extras"),
    [
        ({"proc/device-tree/model": "Raspberry Pi 4 Model B Rev 1.4\0"}, "pi", "tflite"),
        ({"etc/nv_tegra_release": "# R36 (release), REVISION: 4.3\n"}, "jetson", "gpu"),
        ({"proc/device-tree/model": "Generic DT based system\0"}, "generic", "onnx"),
        ({}, "generic", "onnx"),
    ],
)
def test_the_platform_is_detected_from_the_target_tree(
    src: Path, target: Path, files: dict[str, str], platform: str, extras: str
) -> None:
    for name, text in files.items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_text(text)
    before = files_under(target)
    run = ok(install(src, "--dry-run", "--root", target))
    assert run.header("platform").split()[0] == platform
    assert run.header("extras").split()[0] == extras
    assert run.one("pip", f"{src}[{extras}]").verb == "install"
    assert files_under(target) == before


def test_platform_and_extras_can_be_chosen(src: Path, target: Path) -> None:
    (target / "etc").mkdir()
    (target / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.3\n")
    forced = ok(install(src, "--dry-run", "--root", target, "--platform", "generic"))
    assert forced.header("platform") == "generic (--platform)"
    assert forced.header("extras").split()[0] == "onnx"
    chosen = ok(install(src, "--dry-run", "--root", target, "--extras", "onnx,tflite"))
    assert chosen.header("platform").split()[0] == "jetson"
    assert chosen.one("pip", f"{src}[onnx,tflite]").verb == "install"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--platform", "mac"], "--platform: expected pi, jetson or generic, got 'mac'"),
        (["--bogus"], "unknown option '--bogus'"),
        (["--root", "/no/such/dir"], "--root: '/no/such/dir' is not a directory"),
        (["--extras", "tflite;rm"], "--extras: expected extras separated by commas"),
        (["--platform"], "--platform needs a value"),
    ],
)
def test_bad_arguments_are_refused_by_name(src: Path, args: list[str], message: str) -> None:
    run = install(src, "--dry-run", *args)
    assert run.code == 2
    assert message in run.err
    assert run.out == ""


# ------------------------------------------------------------------ a real install in a root


def test_install_into_a_root_then_a_second_run_is_a_no_op_then_uninstall_leaves_nothing(
    src: Path, target: Path
) -> None:
    first = ok(
        install(src, "--root", target, "--platform", "pi", "--skip-venv", "--with-mosquitto")
    )
    assert (target / UNIT).read_text() == (src / "systemd/edge-agent.service").read_text()
    assert (target / CONF).read_text() == (src / "deploy/starter.yaml").read_text()
    assert "listener 1883 127.0.0.1" in (target / MOSQUITTO_CONF).read_text().splitlines()
    assert (mode(target / CONF), mode(target / CONF.parent)) == (0o640, 0o750)
    assert (mode(target / STATE), mode(target / UNIT)) == (0o750, 0o644)
    # No user, owners, apt or systemctl in a root: each is said, none is done.
    assert first.one("user", "edgesight").verb == "skip"
    assert first.one("apt", "mosquitto").verb == "skip"
    assert {a.verb for a in first.actions if a.kind == "systemctl"} == {"skip"}
    assert not [a for a in first.actions if a.verb == "warn"]
    installed = files_under(target)
    assert set(installed) == {str(UNIT), str(CONF), str(MOSQUITTO_CONF)}

    second = ok(
        install(src, "--root", target, "--platform", "pi", "--skip-venv", "--with-mosquitto")
    )
    assert second.changes == []
    assert second.out.splitlines()[-1] == "summary  nothing to change"
    assert files_under(target) == installed  # not even rewritten

    planned = ok(install(src, "--root", target, "--uninstall", "--dry-run"))
    assert files_under(target) == installed
    gone = ok(install(src, "--root", target, "--uninstall"))
    assert [a[:3] for a in gone.changes] == [a[:3] for a in planned.changes]
    assert files_under(target) == {}
    assert (target / STATE).is_dir()  # the state folder stays without --purge
    assert gone.one("dir", "/var/lib/edgesight").verb == "keep"
    assert not (target / "etc/edgesight").exists() and not (target / "opt/edgesight").exists()
    assert ok(install(src, "--root", target, "--uninstall")).changes == []
    ok(install(src, "--root", target, "--purge"))
    assert not (target / STATE).exists()


def test_a_users_config_is_never_overwritten_and_wrong_modes_are_fixed(
    src: Path, target: Path
) -> None:
    args = ("--root", target, "--skip-venv")
    ok(install(src, *args))
    mine = "# mine\nmodel: {bundle: /srv/m}\nsources: [{id: a, uri: /srv/in}]\n"
    (target / CONF).write_text(mine)
    (target / CONF).chmod(0o644)
    (target / STATE).chmod(0o755)
    run = ok(install(src, *args))
    assert (target / CONF).read_text() == mine
    assert ("keep", "file", "/etc/edgesight/agent.yaml") in [a[:3] for a in run.actions]
    fixed = {a.target: a.note for a in run.changes if a.verb == "fix"}
    assert fixed == {
        "/etc/edgesight/agent.yaml": "640 root:edgesight (was mode 644)",
        "/var/lib/edgesight": "750 edgesight:edgesight (was mode 755)",
    }
    assert (mode(target / CONF), mode(target / STATE)) == (0o640, 0o750)
    assert ok(install(src, *args)).changes == []

    kept = ok(install(src, "--root", target, "--uninstall"))
    assert kept.one("file", "/etc/edgesight/agent.yaml").verb == "keep"
    assert files_under(target) == {str(CONF): files_under(target)[str(CONF)]}
    ok(install(src, "--root", target, "--purge"))
    assert files_under(target) == {}


def test_the_state_folder_systemd_moved_for_a_dynamic_user_is_kept_and_purged(
    src: Path, target: Path
) -> None:
    """With DynamicUser=, systemd moves StateDirectory= to /var/lib/private/ at the first start
    and leaves a symlink (systemd.exec(5)); done here by hand, as systemd does it."""
    args = ("--root", target, "--skip-venv")
    ok(install(src, *args))
    private = target / "var/lib/private"
    private.mkdir(mode=0o700)
    (target / STATE).rename(private / "edgesight")
    (target / STATE).symlink_to("private/edgesight")
    (private / "edgesight" / "state.json").write_text("{}")
    assert ok(install(src, *args)).changes == []
    ok(install(src, "--root", target, "--uninstall"))
    assert (private / "edgesight" / "state.json").exists()
    ok(install(src, "--root", target, "--purge"))
    assert not (target / STATE).is_symlink() and not (private / "edgesight").exists()


def test_a_changed_unit_replaces_the_installed_one(src: Path, target: Path) -> None:
    ok(install(src, "--root", target, "--skip-venv"))
    unit = src / "systemd/edge-agent.service"
    unit.write_text(unit.read_text() + "# changed\n")
    run = ok(install(src, "--root", target, "--skip-venv"))
    assert [a[:3] for a in run.changes] == [("update", "file", "/" + str(UNIT))]
    assert (target / UNIT).read_text() == unit.read_text()


@pytest.mark.parametrize(
    ("old", "new", "warning"),
    [
        ("/opt/edgesight/bin/", "/usr/bin/", "does not run /opt/edgesight/bin/edge-agent"),
        ("/etc/edgesight/agent.yaml", "/etc/agent.yaml", "does not read /etc/edgesight/agent.yaml"),
        ("User=edgesight\n", "", "no User=edgesight: the service could not read"),
    ],
)
def test_a_unit_that_does_not_fit_this_install_is_named(
    src: Path, target: Path, old: str, new: str, warning: str
) -> None:
    unit = src / "systemd/edge-agent.service"
    unit.write_text(PLACEHOLDER_UNIT.replace(old, new))
    run = ok(install(src, "--root", target, "--skip-venv", "--dry-run"))
    warned = [a.note for a in run.actions if a.verb == "warn"]
    assert len(warned) == 1 and warning in warned[0], run.out


def test_the_venv_is_built_from_this_tree_once(src: Path, target: Path) -> None:
    """A real venv and a real pip install of this tree; --no-deps keeps it to seconds (the
    dependencies are pip's business, not the installer's)."""
    args = ("--root", target, "--platform", "generic", "--pip-arg=--no-deps")
    before = set(src.iterdir())
    first = ok(install(src, *args))
    assert set(src.iterdir()) == before  # pip built a copy: no build/ or egg-info in the tree
    assert first.one("venv", "/opt/edgesight").verb == "create"
    assert first.one("pip", f"{src}[onnx]").verb == "install"
    python = target / VENV / "bin" / "python"
    version = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('edgesight'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version == __version__
    assert os.access(target / VENV / "bin" / "edge-agent", os.X_OK)
    again = ok(install(src, *args))
    assert again.changes == []
    assert again.one("pip", f"{src}[onnx]").verb == "ok"
    # New code under the same version number is installed, not skipped by pip.
    (src / "edge_agent").unlink()
    shutil.copytree(ROOT / "edge_agent", src / "edge_agent", ignore=IGNORE_CACHES)
    with (src / "edge_agent" / "types.py").open("a") as f:
        f.write("# changed\n")
    updated = ok(install(src, *args))
    assert [a[:3] for a in updated.changes] == [("install", "pip", f"{src}[onnx]")]
    installed = next((target / VENV).glob("lib/python*/site-packages/edge_agent/types.py"))
    assert installed.read_text().endswith("# changed\n")
    ok(install(src, "--root", target, "--uninstall"))
    assert files_under(target) == {}


# ------------------------------------------------------------------- what it installs


def test_the_starter_config_loads_and_points_at_the_local_broker() -> None:
    cfg = load_config(ROOT / "deploy" / "starter.yaml")
    assert cfg.model.bundle == Path("/var/lib/edgesight/models/current")
    assert (cfg.mqtt.host, cfg.mqtt.port) == ("127.0.0.1", 1883)
    script = (ROOT / SCRIPT).read_text()
    assert 'MOSQUITTO_LISTENER="listener 1883 127.0.0.1"' in script


def test_shellcheck_finds_nothing() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian: apt-get install shellcheck)")
    proc = subprocess.run(
        [shellcheck, "--severity=style", str(ROOT / SCRIPT)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout


# ---------------------------------------------- as root into /, in a private mount namespace

# Runs inside `unshare --mount`: / as the installer sees it, with /etc a copy (so useradd and
# userdel write there), /var/lib, /var/log and /opt empty folders, and /run/systemd hidden (a
# systemd on the test machine must not get this unit). The host is untouched.
NAMESPACE_DRIVER = """\
set -u
work=$1 script=$2
cp -a /etc "$work/etc"
mount --bind "$work/etc" /etc
for d in /var/lib /var/log /opt; do mkdir -p "$work$d"; mount --bind "$work$d" "$d"; done
[ ! -d /run/systemd ] || mount -t tmpfs none /run/systemd
step() {
  echo "=== $1"; shift
  bash "$script" "$@" 2>&1; echo "=== rc $?"
  stat -c '%n %a %U:%G' /var/lib/edgesight /etc/edgesight /etc/edgesight/agent.yaml \
    /etc/systemd/system/edge-agent.service 2>/dev/null
  getent passwd edgesight; id -nG edgesight 2>/dev/null
}
step install --skip-venv
step again --skip-venv
step uninstall --uninstall
step purge --purge
true
"""


def namespace_steps(src: Path, tmp_path: Path) -> dict[str, list[str]]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to install into / in a private mount namespace")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"unshare --mount is not allowed here: {probe.stderr.decode().strip()}")
    work = tmp_path / "ns"
    work.mkdir()
    proc = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "bash",
            "-c",
            NAMESPACE_DRIVER,
            "driver",
            str(work),
            str(src / SCRIPT),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("=== ") and not line.startswith("=== rc"):
            current = steps.setdefault(line[4:], [])
        else:
            current.append(line)
    return steps


def test_as_root_into_slash_it_makes_the_user_and_sets_owners(src: Path, tmp_path: Path) -> None:
    host_passwd = Path("/etc/passwd").read_text()
    steps = namespace_steps(src, tmp_path)
    assert Path("/etc/passwd").read_text() == host_passwd  # the namespace kept it all
    first = steps["install"]
    assert "=== rc 0" in first, "\n".join(first)
    assert any(line.startswith("create   user      edgesight (system, no login") for line in first)
    assert "/var/lib/edgesight 750 edgesight:edgesight" in first
    assert "/etc/edgesight 750 root:edgesight" in first
    assert "/etc/edgesight/agent.yaml 640 root:edgesight" in first
    assert "/etc/systemd/system/edge-agent.service 644 root:root" in first
    passwd = next(line for line in first if line.startswith("edgesight:"))
    _, _, uid, _, _, home, shell = passwd.split(":")
    assert (home, shell) == ("/var/lib/edgesight", "/usr/sbin/nologin")
    assert int(uid) < 1000  # a system user
    if subprocess.run(["getent", "group", "video"], capture_output=True).returncode == 0:
        assert "video" in first[-1].split()

    again = steps["again"]
    assert "summary  nothing to change" in again, "\n".join(again)
    assert "ok       user      edgesight" in again

    gone = steps["uninstall"]
    assert "=== rc 0" in gone
    assert not any(line.startswith("/etc/") for line in gone)  # unit, config, folder: gone
    assert "/var/lib/edgesight 750 edgesight:edgesight" in gone  # the state stays, and its user
    assert any(line.startswith("edgesight:") for line in gone)

    purged = steps["purge"]
    assert "remove   user      edgesight" in purged
    assert not any(line.startswith(("edgesight:", "/var/lib/")) for line in purged)
