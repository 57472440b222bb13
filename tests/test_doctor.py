"""``edge-agent doctor`` on a healthy setup and on broken ones, with real parts: mosquitto, the
toy bundle, a generated clip, the test's own file system. Fakes only for what cannot exist
here: a Pi's thermal zone (a sysfs-shaped folder) and ``vcgencmd``'s answer."""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.cli.doctor import main as doctor_main
from edge_agent.demo.broker import free_port
from edge_agent.doctor import Check, run_checks
from edge_agent.doctor.checks import guarded
from edge_agent.doctor.system import OUTBOX_FILE_FACTOR, check_clock, check_thermal
from edge_agent.health.system import SystemSensors
from edge_agent.health.thermal import ThermalConfig
from tests.helpers.clips import write_clip
from tests.helpers.mqtt import Broker, TlsListener
from tests.helpers.tls import Pki, make_pki
from tools.toy_models import colour_blocks_bundle

ROOT = Path(__file__).resolve().parents[1]
#: Seconds a check may wait for a frame or a CONNACK: generous, never asserted on.
TIMEOUT_S = 10.0
#: The snapshot stage's largest cap (analytics/snapshots.py MAX_MAX_BYTES).
SNAPSHOT_MAX_BYTES = 100_000_000_000
EPOCH_1970 = 5.0  # a Pi without RTC, five seconds after boot


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("assets")
    return {
        "bundle": colour_blocks_bundle(folder / "bundle"),
        "clip": write_clip(folder / "clip.mp4", frames=3),
    }


def config(folder: Path, assets: dict[str, Path], port: int, **changes: Any) -> Path:
    """A config file: the toy bundle, the clip as the camera, a broker on ``port``."""
    data: dict[str, Any] = {
        "device_id": "doc",
        "state_dir": str(folder / "state"),
        "model": {"bundle": str(assets["bundle"]), "threads": 1},
        "sources": [{"id": "cam", "uri": str(assets["clip"])}],
        "mqtt": {"host": "127.0.0.1", "port": port},
    }
    data.update(changes)
    file = folder / "agent.yaml"
    file.write_text(yaml.safe_dump(data), encoding="utf-8")
    return file


def cool_pi(tmp_path: Path, millidegrees: int = 45000, throttled: str | None = "0x0") -> Any:
    """SystemSensors reading a sysfs-shaped zone (type cpu-thermal) and a vcgencmd answer in
    the real format (``throttled=0x0``); None: no vcgencmd, as off a Pi."""
    zone = tmp_path / "sys" / "thermal_zone0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text(f"{millidegrees}\n")
    answer = None if throttled is None else f"throttled={throttled}\n"
    return SystemSensors(sys_root=tmp_path / "sys", vcgencmd=lambda: answer)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def run_json(capsys: pytest.CaptureFixture[str], file: Path, *extra: str) -> tuple[int, Any]:
    code = doctor_main(["-c", str(file), "--json", "--timeout", str(TIMEOUT_S), *extra])
    return code, json.loads(capsys.readouterr().out)


# -- healthy ------------------------------------------------------------------------------------


def test_a_healthy_setup_passes_every_check(
    tmp_path: Path, assets: dict[str, Path], broker: Broker
) -> None:
    file = config(tmp_path, assets, broker.port)
    report = run_checks(file, TIMEOUT_S, sensors=cool_pi(tmp_path))
    checks = by_name(report.checks)
    assert list(checks) == [
        "bundle", "runtime", "model", "source cam", "broker", "disk", "clock", "thermal",
    ]  # fmt: skip
    assert {c.name: c.status for c in report.checks if c.status != "ok"} == {}
    assert report.ok
    assert "640x480 frame" in checks["source cam"].found
    assert "connected" in checks["broker"].found
    assert "colour-blocks@1" in checks["bundle"].found
    assert "45.0 °C" in checks["thermal"].found
    # Doctor's client id is its own: an agent running with this device id keeps its session.
    assert "edgesight-doc-doctor" in broker.log()


def test_json_from_the_command_line_exits_0_and_imports_no_torch(
    tmp_path: Path, assets: dict[str, Path], broker: Broker
) -> None:
    file = config(tmp_path, assets, broker.port)
    script = (
        "import sys; from edge_agent.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "doctor", "-c", str(file), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert {c["status"] for c in report["checks"]} <= {"ok", "warn"}
    assert set(report["checks"][0]) == {"name", "status", "found", "advice"}
    assert done.stderr.strip().splitlines()[-1] == "False"


def test_text_output_marks_each_check_and_gives_advice(
    tmp_path: Path, assets: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    file = config(tmp_path, assets, free_port())
    assert doctor_main(["-c", str(file), "--timeout", str(TIMEOUT_S)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  broker: 127.0.0.1:" in out
    assert "      -> start the broker" in out
    assert "ok    bundle: colour-blocks@1" in out


# -- broken -------------------------------------------------------------------------------------


def test_no_broker_fails_with_connection_refused_and_advice(
    tmp_path: Path, assets: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = run_json(capsys, config(tmp_path, assets, free_port()))
    assert code == 1 and report["ok"] is False
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["broker"]
    assert "connection refused" in failed[0]["found"]
    assert "mqtt.host and mqtt.port" in failed[0]["advice"]


def test_mqtt_3_1_1_connects(tmp_path: Path, assets: dict[str, Path], broker: Broker) -> None:
    mqtt = {"host": broker.host, "port": broker.port, "protocol": "3.1.1"}
    check = by_name(run_checks(config(tmp_path, assets, 0, mqtt=mqtt), TIMEOUT_S).checks)
    assert check["broker"].status == "ok" and "MQTT 3.1.1" in check["broker"].found


def test_a_wrong_password_is_named_with_its_advice(
    tmp_path: Path, assets: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    passwords = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "devA", "correct horse"],
        check=True,
        capture_output=True,
    )
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker", password_file=passwords)
    broker.start()
    try:
        mqtt = {"host": broker.host, "port": broker.port, "username": "devA", "password": "x"}
        code, report = run_json(capsys, config(tmp_path, assets, 0, mqtt=mqtt))
    finally:
        broker.stop()
    (check,) = [c for c in report["checks"] if c["name"] == "broker"]
    assert code == 1 and check["status"] == "fail"
    assert "refused the connection" in check["found"]
    assert "mqtt.username and mqtt.password" in check["advice"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize("trusted", ["ca", "other_ca"])
def test_tls_is_checked_with_the_configured_ca(
    tmp_path: Path, assets: dict[str, Path], pki: Pki, trusted: str
) -> None:
    (tmp_path / "broker").mkdir()
    listener = TlsListener(pki.ca.cert_file, pki.server.cert_file, pki.server.key_file)
    broker = Broker(tmp_path / "broker", tls=listener)
    broker.start()
    try:
        ca_file = str(getattr(pki, trusted).cert_file)
        mqtt = {"host": broker.host, "port": broker.port, "tls": {"ca_file": ca_file}}
        report = run_checks(config(tmp_path, assets, 0, mqtt=mqtt), TIMEOUT_S)
    finally:
        broker.stop()
    check = by_name(report.checks)["broker"]
    if trusted == "ca":
        assert check.status == "ok", check
        assert "TLS" in check.found
    else:
        assert check.status == "fail"
        assert "TLS handshake failed" in check.found and "certificate verify failed" in check.found
        assert "mqtt.tls.ca_file" in check.advice


def test_plain_mqtt_against_a_tls_port_fails_with_advice(
    tmp_path: Path, assets: dict[str, Path], pki: Pki
) -> None:
    (tmp_path / "broker").mkdir()
    listener = TlsListener(pki.ca.cert_file, pki.server.cert_file, pki.server.key_file)
    broker = Broker(tmp_path / "broker", tls=listener)
    broker.start()
    try:
        mqtt = {"host": broker.host, "port": broker.port}
        report = run_checks(config(tmp_path, assets, 0, mqtt=mqtt), TIMEOUT_S)
    finally:
        broker.stop()
    check = by_name(report.checks)["broker"]
    assert check.status == "fail"
    assert "is TLS set the same way on both sides" in check.advice


def test_a_missing_ca_file_fails_the_broker_check(tmp_path: Path, assets: dict[str, Path]) -> None:
    mqtt = {"host": "127.0.0.1", "port": free_port(), "tls": {"ca_file": "/nowhere/ca.pem"}}
    report = run_checks(config(tmp_path, assets, 0, mqtt=mqtt), 1.0)
    check = by_name(report.checks)["broker"]
    assert (
        check.status == "fail" and "mqtt.tls.ca_file: /nowhere/ca.pem does not exist" in check.found
    )


def test_a_bundle_changed_after_hashing_fails(
    tmp_path: Path, assets: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = shutil.copytree(assets["bundle"], tmp_path / "bundle")
    with (bundle / "model.onnx").open("ab") as model:
        model.write(b"\0")
    file = config(tmp_path, {**assets, "bundle": bundle}, free_port())
    code, report = run_json(capsys, file)
    checks = {c["name"]: c for c in report["checks"]}
    assert code == 1
    assert checks["bundle"]["status"] == "fail"
    assert "sha256" in checks["bundle"]["found"] and "model.onnx" in checks["bundle"]["found"]
    assert "model" not in checks  # nothing to run: the other checks still ran
    assert checks["source cam"]["status"] == "ok"


def test_caps_beyond_the_free_space_fail(
    tmp_path: Path, assets: dict[str, Path], broker: Broker
) -> None:
    """The state folder is on the test's own file system. Filling it for real needs a small
    tmpfs or loop device (root); instead the config's caps exceed what shutil.disk_usage says
    is free, so the check is real: it compares the caps with this disk's free bytes."""
    free = shutil.disk_usage(tmp_path).free
    count = free // SNAPSHOT_MAX_BYTES + 1  # enough sources' snapshot caps to pass ``free``
    sources = [
        {"id": f"cam{i}", "uri": str(assets["clip"]),
         "stages": [{"type": "snapshot", "max_bytes": SNAPSHOT_MAX_BYTES}]}
        for i in range(count)
    ]  # fmt: skip
    file = config(tmp_path, assets, broker.port, sources=sources)
    report = run_checks(file, TIMEOUT_S, sensors=cool_pi(tmp_path))
    check = by_name(report.checks)["disk"]
    assert check.status == "fail" and not report.ok
    assert "snapshots of cam0 up to 100.0 GB more" in check.found
    assert "short on" in check.advice and "mqtt.outbox.max_bytes" in check.advice
    assert [c.name for c in report.checks if c.status == "fail"] == ["disk"]


def test_the_outbox_cap_is_counted_with_its_file_growth(
    tmp_path: Path, assets: dict[str, Path]
) -> None:
    outbox = {"max_bytes": 1_000_000_000}
    mqtt = {"host": "127.0.0.1", "port": free_port(), "outbox": outbox}
    report = run_checks(config(tmp_path, assets, 0, mqtt=mqtt), 1.0)
    expected = math.ceil(1_000_000_000 * OUTBOX_FILE_FACTOR) / 1e9
    assert f"outbox up to {expected:.1f} GB more" in by_name(report.checks)["disk"].found


@pytest.mark.parametrize(
    ("source", "found", "advice"),
    [
        ({"uri": "/dev/video99"}, "no such device: /dev/video99", "ls /dev/video*"),
        ({"uri": "99", "kind": "camera"}, "no such device: /dev/video99", "video group"),
        ({"uri": "/nowhere/clip.mp4"}, "sources[0].uri: /nowhere/clip.mp4 does not exist", "uri"),
        (
            {"uri": "http://127.0.0.1:{port}/cam.mjpg"},
            "no frame within 1 s (connection refused)",
            "ffplay",
        ),
    ],
)
def test_a_missing_camera_fails_with_advice(
    tmp_path: Path, assets: dict[str, Path], source: dict[str, str], found: str, advice: str
) -> None:
    uri = source["uri"].format(port=free_port())
    sources = [{**source, "id": "cam", "uri": uri}]
    file = config(tmp_path, assets, free_port(), sources=sources)
    check = by_name(run_checks(file, 1.0).checks)["source cam"]
    assert check.status == "fail"
    assert found in check.found and advice in check.advice


def test_a_stream_that_never_answers_still_exits_1(tmp_path: Path, assets: dict[str, Path]) -> None:
    """A camera that accepts TCP and then says nothing holds its reader thread in OpenCV past
    the check (FFMPEG's open timeout is 10 s): the command still ends, exit 1, with
    its JSON. (The abort that cli/doctor.py's os._exit prevents needs the thread to come back
    from OpenCV during shutdown: a race this test does not time.)"""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshakes; nobody ever answers
        uri = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/stream"
        file = config(tmp_path, assets, free_port(), sources=[{"id": "cam", "uri": uri}])
        done = subprocess.run(
            [sys.executable, "-m", "edge_agent.cli", "doctor", "-c", str(file), "--json",
             "--timeout", "1"],
            capture_output=True, text=True, cwd=ROOT, check=False,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["source cam"]["status"] == "fail"
    assert "no frame within 1 s" in checks["source cam"]["found"]


def test_a_check_that_raises_is_a_fail_not_a_crash() -> None:
    def broken() -> Check:
        raise PermissionError(13, "Permission denied", "/var/lib/edgesight/sources")

    check = guarded("disk", broken)
    assert (check.name, check.status) == ("disk", "fail")
    assert "PermissionError" in check.found and "Permission denied" in check.found


def test_a_clock_in_1970_fails_with_advice(tmp_path: Path, assets: dict[str, Path]) -> None:
    file = config(tmp_path, assets, free_port())
    check = by_name(run_checks(file, 1.0, clock=lambda: EPOCH_1970).checks)["clock"]
    assert check.status == "fail"
    assert "1970-01-01 00:00:05 UTC" in check.found
    assert "chrony" in check.advice and "RTC" in check.advice


def test_a_clock_before_the_bundle_was_made_fails(assets: dict[str, Path]) -> None:
    from edge_agent.bundle import load_bundle

    bundle = load_bundle(assets["bundle"])
    created = datetime.fromisoformat(str(bundle.manifest.created)).timestamp()
    check = check_clock(created - 86400, bundle)  # after 2024, a day before the bundle
    assert check.status == "fail" and "when the bundle was made" in check.found
    assert check_clock(created + 86400, bundle).status == "ok"


@pytest.mark.parametrize(
    ("millidegrees", "throttled", "status", "words"),
    [
        (45000, "0x0", "ok", "cpu 45.0 °C"),
        (85000, "0x0", "fail", "heatsink"),
        (75000, "0x0", "warn", "it happened before"),
        (50000, "0x50005", "fail", "power supply"),
        (50000, "0x50000", "warn", "power supply"),
        (50000, "0x80008", "fail", "heatsink"),
    ],
)
def test_temperature_and_throttling(
    tmp_path: Path,
    millidegrees: int,
    throttled: str,
    status: str,
    words: str,
    make: Callable[..., Any] = cool_pi,
) -> None:
    check = check_thermal(ThermalConfig(), make(tmp_path, millidegrees, throttled))
    assert check.status == status, check
    assert words in check.found + check.advice


def test_the_configured_thermal_zone_is_read(tmp_path: Path, assets: dict[str, Path]) -> None:
    temp = tmp_path / "temp"
    temp.write_text("90000\n")  # a sysfs temp file: millidegrees
    health = {"thermal": {"thermal_zone": str(temp)}}
    report = run_checks(config(tmp_path, assets, free_port(), health=health), 1.0)
    check = by_name(report.checks)["thermal"]
    assert check.status == "fail" and "cpu 90.0 °C (limit 80 °C)" in check.found


def test_no_sensor_at_all_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "sys").mkdir()
    check = check_thermal(ThermalConfig(), SystemSensors(tmp_path / "sys", vcgencmd=lambda: None))
    assert check.status == "warn" and "cannot be checked" in check.found


def test_missing_gpu_providers_are_a_warning(tmp_path: Path, assets: dict[str, Path]) -> None:
    model = {"bundle": str(assets["bundle"]), "onnx": {"providers": ["NoSuchExecutionProvider"]}}
    report = run_checks(config(tmp_path, assets, free_port(), model=model), 1.0)
    check = by_name(report.checks)["runtime"]
    assert check.status == "warn" and "NoSuchExecutionProvider" in check.advice


# -- the config itself --------------------------------------------------------------------------


def test_a_bad_config_exits_2_naming_the_key(
    tmp_path: Path, assets: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    file = config(tmp_path, assets, free_port(), mqtt={"port": 70000})
    code, report = run_json(capsys, file)
    assert code == 2 and report["ok"] is False
    (check,) = report["checks"]
    assert check["name"] == "config" and "mqtt.port" in check["found"]
    assert doctor_main(["-c", str(file)]) == 2
    assert "mqtt.port" in capsys.readouterr().err


def test_timeout_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        doctor_main(["-c", "x.yaml", "--timeout", "0"])
    assert exit_info.value.code == 2
    assert "--timeout: expected seconds above 0" in capsys.readouterr().err
