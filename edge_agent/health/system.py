"""What the device itself says, for the stats topic: the agent's memory, the CPU temperature, the
other thermal zones (a Jetson's GPU and SoC), and a Raspberry Pi's throttling.

The temperature and throttling sensors are thermal.py's (``find_zone``, ``Vcgencmd``,
``parse_throttled``), so the stats and the governor read the same zone the same way. Like them,
a reading that fails is ``None`` (logged once), never an exception: the stats timer must not
stop because a sensor went away.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.health.thermal import (
    SYS_THERMAL,
    Vcgencmd,
    _read_millidegrees,
    find_zone,
    parse_throttled,
)

log = logging.getLogger(__name__)

#: The process's memory in pages: size, resident, shared... (proc(5)); resident is *current*.
PROC_STATM = Path("/proc/self/statm")
#: More zones than this is a PC's ACPI listing, not information: the rest are left out.
MAX_ZONES = 32
#: ``vcgencmd get_throttled`` bits 0-3 say what holds *now*; the same conditions 16 bits higher
#: say they have occurred since boot
#: (https://www.raspberrypi.com/documentation/computers/os.html#get_throttled).
THROTTLE_FLAGS = ("under_voltage", "arm_frequency_capped", "throttled", "soft_temperature_limit")
SINCE_BOOT_SHIFT = 16
#: ``ru_maxrss`` is in KiB on Linux but in bytes on macOS (getrusage(2) of each).
MAXRSS_UNIT_BYTES = 1 if sys.platform == "darwin" else 1024


@dataclass(frozen=True)
class SystemReadings:
    """One read of the device; ``None`` where a reading is unknown (no such sensor, or it
    failed)."""

    rss_bytes: int | None  # resident memory now (/proc/self/statm), not the peak
    peak_rss_bytes: int | None  # the most resident memory since start (getrusage ru_maxrss)
    cpu_temp_c: float | None  # the governor's zone: the CPU's, else the hottest
    zones_c: dict[str, float | None] = field(default_factory=dict)  # every zone by its type
    throttled_bits: int | None = None  # vcgencmd get_throttled, None off a Pi


def throttle_flags(bits: int) -> tuple[list[str], list[str]]:
    """The names of the conditions ``bits`` reports (now, since boot), in bit order."""
    if bits < 0:
        raise ValueError(f"throttled bits must be >= 0, but got {bits}")
    now = [name for i, name in enumerate(THROTTLE_FLAGS) if bits >> i & 1]
    since = [name for i, name in enumerate(THROTTLE_FLAGS) if bits >> (i + SINCE_BOOT_SHIFT) & 1]
    return now, since


def read_rss_bytes(statm: Path = PROC_STATM, page_size: int | None = None) -> int | None:
    """The process's resident memory now, in bytes; None where there is no /proc (macOS)."""
    try:
        resident = int(statm.read_text().split()[1])
        size = page_size if page_size is not None else os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
    return resident * size


def read_peak_rss_bytes() -> int | None:
    """The most resident memory the process has had, in bytes (the kernel keeps it)."""
    try:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (OSError, ValueError):
        return None
    return int(peak) * MAXRSS_UNIT_BYTES


def read_zones(sys_root: Path = SYS_THERMAL, limit: int = MAX_ZONES) -> dict[str, float | None]:
    """Every thermal zone's temperature in °C by its ``type`` (a Jetson's ``CPU-therm``,
    ``GPU-therm``, ``SOC0-therm``...); None for a zone that reads nothing plausible. A type
    that several zones share gets ``#<zone number>`` on each (``acpitz#0``, ``acpitz#1``)."""
    zones = sorted(
        (p for p in sys_root.glob("thermal_zone*") if (p / "temp").is_file()),
        key=lambda p: (len(p.name), p.name),  # thermal_zone2 before thermal_zone10
    )[:limit]
    named: list[tuple[str, str, float | None]] = []
    for zone in zones:
        number = zone.name.removeprefix("thermal_zone")
        try:
            kind = (zone / "type").read_text().strip() or zone.name
        except OSError:
            kind = zone.name
        named.append((kind, number, _read_millidegrees(zone / "temp")))
    kinds = [kind for kind, _n, _t in named]
    return {
        (f"{kind}#{number}" if kinds.count(kind) > 1 else kind): temp
        for kind, number, temp in named
    }


class SystemSensors:
    """Reads :class:`SystemReadings`; never raises. Not thread-safe: the stats timer owns it.

    ``cpu_zone`` is the governor's ``thermal_zone`` option (a ``temp`` file), so both report
    the same sensor; ``vcgencmd`` defaults to thermal.py's (None where there is none).
    """

    def __init__(
        self,
        sys_root: Path = SYS_THERMAL,
        cpu_zone: Path | None = None,
        vcgencmd: Callable[[], str | None] | None = None,
        statm: Path = PROC_STATM,
    ) -> None:
        self._sys_root = sys_root
        self._cpu_zone = cpu_zone
        self._vcgencmd = vcgencmd if vcgencmd is not None else Vcgencmd()
        self._statm = statm
        self._warned: set[str] = set()

    def read(self) -> SystemReadings:
        rss, peak = read_rss_bytes(self._statm), read_peak_rss_bytes()
        if rss is not None and peak is not None:
            # The two come from kernel counters synced at different moments (per-thread
            # caches), so the peak can trail "now" by a few pages; a peak below now is nonsense.
            peak = max(peak, rss)
        return SystemReadings(
            rss_bytes=rss,
            peak_rss_bytes=peak,
            cpu_temp_c=self._cpu_temp(),
            zones_c=read_zones(self._sys_root),
            throttled_bits=self._throttled(),
        )

    def _cpu_temp(self) -> float | None:
        if self._cpu_zone is None:  # looked up again each read until one appears
            self._cpu_zone = find_zone(self._sys_root)
        return None if self._cpu_zone is None else _read_millidegrees(self._cpu_zone)

    def _throttled(self) -> int | None:
        try:
            text = self._vcgencmd()
            return None if text is None else parse_throttled(text)
        except Exception as exc:  # a caller's callable or garbage: unknown, not a dead timer
            if "vcgencmd" not in self._warned:
                self._warned.add("vcgencmd")
                log.warning("stats: throttling unknown (vcgencmd get_throttled: %s)", exc)
            return None
