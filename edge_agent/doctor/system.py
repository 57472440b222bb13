"""The device itself: runtime packages, free disk for the outbox and snapshots, the clock, and
temperature and throttling (health/system.py's sensors, so doctor reads what the stats read)."""

from __future__ import annotations

import importlib
import math
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from edge_agent.bundle import Bundle
from edge_agent.config import AgentConfig
from edge_agent.config.thermal import ThermalConfig
from edge_agent.doctor.checks import Check
from edge_agent.health.system import SystemSensors, throttle_flags
from edge_agent.runtimes import RUNTIMES

#: A clock before this is a device that booted without a real-time clock and has not synced
#: (a Raspberry Pi without RTC starts at its last saved time, or in 1970). The agent was
#: written after it, so no correct clock can read earlier.
CLOCK_FLOOR = datetime(2024, 1, 1, tzinfo=UTC)
#: The outbox's SQLite file grows to about this times ``max_bytes`` with 1 KB payloads
#: (docs/outbox.md); it does not shrink.
OUTBOX_FILE_FACTOR = 1.35
#: Where the outbox lives in ``state_dir`` unless ``mqtt.outbox.path`` says otherwise
#: (publish/wiring.py's OUTBOX_FILE; not imported, which would load the publisher).
OUTBOX_FILE = "outbox/outbox.db"
#: Free space to keep beyond the caps, so logs and the OS still have room when they are full.
SPARE_BYTES = 256 * 1024**2
UNDER_VOLTAGE_ADVICE = (
    "the power supply gives too little: use the board's official supply (Pi 4: 5.1 V 3 A, "
    "Pi 5: 5.1 V 5 A) and a short, thick cable; under-voltage corrupts SD cards"
)
HEAT_ADVICE = (
    "the board is too hot: fit a heatsink or fan, give the case air, or lower the load "
    "(fps_limit, a smaller model); the agent slows itself down meanwhile (docs/thermal.md)"
)


def _version(module: object) -> str:
    return str(getattr(module, "__version__", "?"))


def check_runtime(cfg: AgentConfig, bundle: Bundle | None) -> Check:
    """The runtime package the bundle needs imports, and what it offers (onnxruntime's
    execution providers); the other runtimes and OpenCV are listed. Imports no torch."""
    needed: str | None = cfg.model.runtime if cfg.model.runtime != "auto" else None
    if bundle is not None:
        needed = cfg.model.runtime_for(bundle.manifest.model.format)
    found: list[str] = []
    missing: list[str] = []
    for name, entry in RUNTIMES.items():
        module = None
        for package in entry.packages:
            try:
                module = importlib.import_module(package)
                break
            except ImportError:
                continue
        if module is None:
            found.append(f"{name}: not installed")
            if name == needed:
                missing.append(f"pip install 'edgesight[{entry.extra}]'")
            continue
        text = f"{name}: {module.__name__} {_version(module)}"
        if name == "onnx":
            text += f", providers {module.get_available_providers()}"
        found.append(text)
    try:
        import cv2

        found.append(f"opencv {cv2.__version__}")
    except ImportError:
        found.append("opencv: not installed")
        missing.append("pip install opencv-python-headless")
    summary = "; ".join(found)
    if missing:
        return Check("runtime", "fail", summary, "; ".join(missing))
    wanted = cfg.model.onnx.providers
    if needed == "onnx" and wanted:
        import onnxruntime

        absent = [p for p in wanted if p not in onnxruntime.get_available_providers()]
        if absent:
            advice = (
                f"model.onnx.providers asks for {absent}, which this onnxruntime lacks: the "
                "model runs on the CPU; GPU providers need the 'gpu' extra and vendor libraries"
            )
            return Check("runtime", "warn", summary, advice)
    return Check("runtime", "ok", f"{needed or 'auto'} runtime needed; {summary}")


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent: where the folder will be made."""
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _used(path: Path) -> int:
    """Bytes already in a file (with SQLite's -wal) or under a folder; 0 when absent."""
    if path.is_file():
        wal = path.with_name(path.name + "-wal")
        return path.stat().st_size + (wal.stat().st_size if wal.is_file() else 0)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0


def disk_needs(cfg: AgentConfig) -> list[tuple[str, Path, int]]:
    """(what, where, bytes it may still grow by): the outbox and each source's snapshots."""
    box = cfg.mqtt.outbox
    outbox = box.path if box.path is not None else cfg.state_dir / OUTBOX_FILE
    grows = math.ceil(box.max_bytes * OUTBOX_FILE_FACTOR) - _used(outbox)
    needs = [("outbox", outbox, max(grows, 0))]
    for source in cfg.sources:
        for stage in source.stages:
            options = stage.options()
            if stage.type == "snapshot" and getattr(options, "save", False):
                folder = cfg.state_dir / "sources" / source.id / "snapshots"
                cap = int(getattr(options, "max_bytes", 0))
                needs.append((f"snapshots of {source.id}", folder, max(cap - _used(folder), 0)))
    return needs


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def check_disk(cfg: AgentConfig) -> Check:
    """The state folder can be written, and each file system it lands on has room for what
    the caps allow (outbox ``max_bytes`` x 1.35, snapshot ``max_bytes``) beyond what is used."""
    where = _existing(cfg.state_dir)
    if not os.access(where, os.W_OK | os.X_OK):
        advice = (
            f"give the agent's user write access to {where} (the systemd unit's "
            "StateDirectory= does), or set state_dir to a folder it owns"
        )
        return Check("disk", "fail", f"state_dir {cfg.state_dir}: {where} is not writable", advice)
    by_device: dict[int, tuple[Path, list[tuple[str, int]]]] = {}
    for what, path, grows in disk_needs(cfg):
        anchor = _existing(path)
        entry = by_device.setdefault(anchor.stat().st_dev, (anchor, []))
        entry[1].append((what, grows))
    worst: tuple[str, str] = ("ok", "")
    found = []
    for anchor, needs in by_device.values():
        free = shutil.disk_usage(anchor).free
        total = sum(n for _w, n in needs)
        parts = ", ".join(f"{w} up to {_size(n)} more" for w, n in needs)
        found.append(f"{anchor}: {_size(free)} free; {parts}")
        if free < total:
            worst = ("fail", f"{_size(total - free)} short on {anchor}")
        elif free < total + SPARE_BYTES and worst[0] == "ok":
            worst = ("warn", f"less than {_size(SPARE_BYTES)} would be left on {anchor}")
    status, short = worst
    if status == "ok":
        return Check("disk", "ok", "; ".join(found))
    advice = (
        f"{short} once the caps fill: free space there, lower mqtt.outbox.max_bytes or the "
        "snapshot stage's max_bytes, or put state_dir on a bigger disk"
    )
    return Check("disk", "fail" if status == "fail" else "warn", "; ".join(found), advice)


def _parse_created(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        created = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def check_clock(now: float, bundle: Bundle | None = None) -> Check:
    """The wall clock is not before 2024-01-01, nor before the bundle was made."""
    try:
        shown = datetime.fromtimestamp(now, UTC)
    except (OverflowError, OSError, ValueError):
        return Check("clock", "fail", f"the clock reads {now!r}, not a date", "set the clock")
    floor, why = CLOCK_FLOOR, "2024-01-01, before this agent was written"
    created = _parse_created(bundle.manifest.created) if bundle is not None else None
    if created is not None and created > floor:
        floor, why = created, f"{created:%Y-%m-%d %H:%M} UTC, when the bundle was made"
    found = f"the clock reads {shown:%Y-%m-%d %H:%M:%S} UTC"
    if shown >= floor:
        return Check("clock", "ok", found)
    advice = (
        "this device has no battery-backed clock, or it has not synced yet: enable network "
        "time (systemd-timesyncd or chrony) and let it sync before the agent starts, or fit an "
        "RTC (Pi 5: a battery on its RTC connector). Until then every result's ts, the "
        "outbox's max_age_s and snapshot names are wrong"
    )
    return Check("clock", "fail", f"{found}, before {why}", advice)


def check_thermal(cfg: ThermalConfig, sensors: SystemSensors | None = None) -> Check:
    """The CPU temperature against ``health.thermal`` and a Pi's throttling now and since
    boot (``vcgencmd get_throttled``)."""
    if sensors is None:  # the zone the governor reads: the configured one, else found
        zone = Path(cfg.thermal_zone) if cfg.thermal_zone is not None else None
        sensors = SystemSensors(cpu_zone=zone)
    readings = sensors.read()
    temp, bits = readings.cpu_temp_c, readings.throttled_bits
    if temp is None and bits is None:
        found = "no temperature sensor and no vcgencmd: heat and throttling cannot be checked"
        return Check("thermal", "warn", found, "normal on a PC or VM; on a Pi, install vcgencmd")
    parts = [] if temp is None else [f"cpu {temp:.1f} °C (limit {cfg.limit_c:g} °C)"]
    now, since = throttle_flags(bits) if bits is not None else ([], [])
    if bits is not None:
        parts.append(f"throttled=0x{bits:x}")
    if now:
        parts.append(f"now: {', '.join(now)}")
    if since:
        parts.append(f"since boot: {', '.join(since)}")
    found = "; ".join(parts)
    power = "under_voltage" in now or "under_voltage" in since
    if now or (temp is not None and temp >= cfg.limit_c):
        advice = UNDER_VOLTAGE_ADVICE if "under_voltage" in now else HEAT_ADVICE
        return Check("thermal", "fail", found, advice)
    if since or (temp is not None and temp > cfg.resume_c):
        advice = UNDER_VOLTAGE_ADVICE if power else HEAT_ADVICE
        return Check("thermal", "warn", found, f"it happened before: {advice}")
    return Check("thermal", "ok", found)
