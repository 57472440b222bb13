"""Thermal and power awareness: how much of full speed the agent may use right now.

``ThermalGovernor.poll`` reads the CPU temperature from a kernel thermal zone and, on a Raspberry
Pi, ``vcgencmd get_throttled``; while the device is too hot or throttled it lowers the allowed
share of full speed one step per check, and raises it again once cool. Between ``resume_c`` and
``limit_c`` it holds, so the rate does not flap around one temperature. A Jetson's thermal zones
are under the same sysfs folder (types ``CPU-therm``, ``GPU-therm``...), so it needs nothing more.

A sensor that cannot be read is an environment fault: logged once, treated as "unknown" (hold),
never as hot, and never raised to the caller. ``pace`` turns the factor into an idle time for a
worker thread's duty cycle.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from edge_agent.config.thermal import ThermalConfig

log = logging.getLogger(__name__)

#: Where Linux lists its thermal zones (Raspberry Pi OS, Jetson L4T, x86 alike).
SYS_THERMAL = Path("/sys/class/thermal")
#: Zone types that measure the CPU or SoC: Raspberry Pi, Jetson, Rockchip/Amlogic, Intel.
CPU_ZONE_TYPES = ("cpu-thermal", "cpu-therm", "soc_thermal", "soc-thermal", "x86_pkg_temp")
#: ``vcgencmd`` answers in milliseconds; a hung mailbox must not stall the agent's health loop.
VCGENCMD_TIMEOUT_S = 2.0
#: ``get_throttled`` bits that describe *now*: 0 under-voltage, 1 arm frequency capped,
#: 2 currently throttled, 3 soft temperature limit active. Bits 16-19 say the same "has occurred
#: since boot" and must not slow a device that is fine now
#: (https://www.raspberrypi.com/documentation/computers/os.html#get_throttled).
THROTTLED_NOW_MASK = 0xF
#: A reading outside this range is a broken sensor, not heat (some zones report -273 or 0x7fff).
PLAUSIBLE_C = (-40.0, 150.0)
#: Factors this close to 1 are 1: 0.3 ** 3 / 0.3 ** 3 need not be exactly 1.0 in floating point.
FACTOR_EPSILON = 1e-9


@dataclass(frozen=True)
class ThermalState:
    """One verdict of the governor.

    ``factor`` is the share of full speed allowed (1.0 = no limit); ``changed`` is True when this
    poll moved the factor; ``reason`` says why in words, for status and logs.
    """

    temp_c: float | None
    throttled: bool
    factor: float
    reason: str
    changed: bool


def pace(busy_s: float, factor: float) -> float:
    """Seconds a thread must idle after ``busy_s`` seconds of work so that it works only a
    ``factor`` share of the time: ``busy / (busy + idle) == factor``."""
    if not 0 < factor <= 1:
        raise ValueError(f"factor must be in (0, 1], but got {factor!r}")
    if busy_s < 0:
        raise ValueError(f"busy_s must be >= 0, but got {busy_s!r}")
    return busy_s * (1.0 / factor - 1.0)


def parse_throttled(text: str) -> int:
    """The bits of ``vcgencmd get_throttled``'s answer (``throttled=0x50005``)."""
    key, sep, value = text.strip().partition("=")
    if not sep or key != "throttled":
        raise ValueError(f"expected 'throttled=0x...', but got {text.strip()!r}")
    return int(value, 16)


class Vcgencmd:
    """``vcgencmd get_throttled``'s output, or None where there is no vcgencmd or it fails.

    Never raises: a failure is logged once and reads as "unknown".
    """

    def __init__(self, timeout_s: float = VCGENCMD_TIMEOUT_S) -> None:
        self._timeout_s = timeout_s
        self._warned = False

    def __call__(self) -> str | None:
        exe = shutil.which("vcgencmd")
        if exe is None:
            return None
        try:
            done = subprocess.run(
                [exe, "get_throttled"],
                capture_output=True,
                text=True,
                timeout=self._timeout_s,
                check=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            if not self._warned:
                self._warned = True
                log.warning("vcgencmd get_throttled failed, throttling unknown: %s", exc)
            return None
        return done.stdout


class ThermalGovernor:
    """The allowed share of full speed, from temperature and throttling. Not thread-safe: one
    thread polls it and publishes the state it returns."""

    def __init__(
        self,
        cfg: ThermalConfig,
        sys_root: Path = SYS_THERMAL,
        vcgencmd: Callable[[], str | None] | None = None,
    ) -> None:
        self.cfg = cfg
        self._sys_root = sys_root
        self._vcgencmd = vcgencmd if vcgencmd is not None else Vcgencmd()
        self._zone: Path | None = None
        self._last_check: float | None = None
        self._warned: set[str] = set()
        reason = "thermal governor disabled" if not cfg.enabled else "not checked yet"
        self._state = ThermalState(None, False, 1.0, reason, False)

    @property
    def state(self) -> ThermalState:
        """The last verdict, with ``changed=False``."""
        return replace(self._state, changed=False)

    def poll(self, now: float) -> ThermalState:
        """Read the sensors if ``check_every_s`` has passed since the last read (``now`` on a
        monotonic clock, in seconds) and step the factor; else the last state, unchanged."""
        if not self.cfg.enabled:
            return self.state
        since = None if self._last_check is None else now - self._last_check
        if since is not None and 0 <= since < self.cfg.check_every_s:
            return self.state  # a clock that went back reads at once rather than stalling
        self._last_check = now
        temp_c, has_zone = self._read_temp()
        bits, has_vcgencmd = self._read_throttled()
        throttled = bits is not None and bool(bits & THROTTLED_NOW_MASK)
        old = self._state.factor
        cfg = self.cfg
        if throttled:
            assert bits is not None
            factor, reason = self._down(old), f"Pi reports throttling (0x{bits:x})"
        elif temp_c is not None and temp_c >= cfg.limit_c:
            factor, reason = self._down(old), f"cpu {temp_c:.1f} °C >= limit {cfg.limit_c:g} °C"
        elif temp_c is not None and temp_c <= cfg.resume_c:
            factor, reason = self._up(old), f"cool ({temp_c:.1f} °C)"
        elif temp_c is not None:
            factor = old
            reason = (
                f"cpu {temp_c:.1f} °C between resume {cfg.resume_c:g} and limit "
                f"{cfg.limit_c:g} °C: holding"
            )
        elif not has_zone and not has_vcgencmd:
            factor, reason = old, "no sensor"
        else:
            factor, reason = old, "temperature unknown: holding"
        self._state = ThermalState(temp_c, throttled, factor, reason, factor != old)
        return self._state

    def _down(self, factor: float) -> float:
        return max(self.cfg.min_factor, factor * self.cfg.step)

    def _up(self, factor: float) -> float:
        raised = factor / self.cfg.step
        return 1.0 if raised >= 1.0 - FACTOR_EPSILON else raised

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    # --- sensors ------------------------------------------------------------------------------

    def _read_temp(self) -> tuple[float | None, bool]:
        """(°C or None when unreadable, whether a zone exists at all)."""
        zone = self._find_zone()
        if zone is None:
            return None, False
        temp = _read_millidegrees(zone)
        if temp is None:
            self._warn_once(
                f"temp:{zone}",
                "thermal zone %s unreadable or implausible, temperature unknown",
                zone,
            )
        return temp, True

    def _find_zone(self) -> Path | None:
        if self.cfg.thermal_zone is not None:
            return Path(self.cfg.thermal_zone)
        if self._zone is None:  # looked up again each check until one appears
            self._zone = find_zone(self._sys_root)
            if self._zone is not None:
                log.info("thermal: reading %s", self._zone)
        return self._zone

    def _read_throttled(self) -> tuple[int | None, bool]:
        """(the get_throttled bits or None when unknown, whether vcgencmd answered at all)."""
        try:
            text = self._vcgencmd()
        except Exception as exc:  # a caller's callable; a sensor fault must not stop the agent
            self._warn_once("vcgencmd", "reading throttling failed, unknown: %r", exc)
            return None, True
        if text is None:
            return None, False
        try:
            return parse_throttled(text), True
        except ValueError as exc:
            self._warn_once("vcgencmd", "vcgencmd get_throttled: %s; throttling unknown", exc)
            return None, True


def _read_millidegrees(temp_file: Path) -> float | None:
    try:
        celsius = int(temp_file.read_text().strip()) / 1000.0
    except (OSError, ValueError):  # missing, EINVAL from a sleeping sensor, or not a number
        return None
    low, high = PLAUSIBLE_C
    return celsius if low <= celsius <= high else None


def find_zone(sys_root: Path = SYS_THERMAL) -> Path | None:
    """The ``temp`` file of the CPU's thermal zone under ``sys_root``: a zone whose type names
    the CPU or SoC, else the hottest readable one; None when there is none."""
    zones = sorted(
        (p for p in sys_root.glob("thermal_zone*") if (p / "temp").is_file()),
        key=lambda p: (len(p.name), p.name),  # thermal_zone2 before thermal_zone10
    )
    for zone in zones:
        try:
            kind = (zone / "type").read_text().strip().lower()
        except OSError:
            continue
        if kind in CPU_ZONE_TYPES:
            return zone / "temp"
    readings = [(_read_millidegrees(zone / "temp"), zone / "temp") for zone in zones]
    known = [(t, path) for t, path in readings if t is not None]
    if known:
        return max(known, key=lambda r: r[0])[1]
    # None readable now: keep the first, so the fault is logged and shown rather than "no sensor".
    return readings[0][1] if readings else None
