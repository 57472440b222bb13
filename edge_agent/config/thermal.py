"""``thermal``: when the agent slows down because the device is hot or throttled."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from edge_agent.config.base import Section

#: Raspberry Pi 4/5 firmware starts soft throttling at 80 °C and hard throttling at 85 °C
#: (https://www.raspberrypi.com/documentation/computers/raspberry-pi.html#frequency-management-and-thermal-control).
PI_SOFT_LIMIT_C = 80.0
#: Above this no silicon we target still runs: a limit set higher is a typo (800 for 80).
MAX_LIMIT_C = 125.0
#: An hour: a slower check would leave a hot device at full speed, or a cool one slowed, too long.
MAX_CHECK_EVERY_S = 3600.0


class ThermalConfig(Section):
    enabled: bool = Field(
        True,
        description="Lower the frame rate step by step while the device is too hot or reports "
        "throttling, and restore it when cool. Acts only where a temperature sensor or "
        "vcgencmd exists; elsewhere the rate is never limited.",
    )
    limit_c: float = Field(
        PI_SOFT_LIMIT_C,
        gt=0,
        le=MAX_LIMIT_C,
        description="Step the rate down while the CPU is at or above this temperature, in °C "
        f"(0 to {MAX_LIMIT_C:g}). The default is where Raspberry Pi 4/5 firmware starts soft "
        "throttling (80 °C; hard throttling at 85 °C), so the agent gives way before the "
        "firmware halves the clock under it.",
    )
    resume_c: float = Field(
        70.0,
        gt=0,
        le=MAX_LIMIT_C,
        validate_default=True,  # limit_c: 60 alone must be refused too, naming resume_c
        description="Step the rate back up while the CPU is at or below this temperature, in °C "
        f"(above 0, at most {MAX_LIMIT_C:g}); must be below limit_c: between the two the rate "
        "holds, so it does not flap.",
    )
    step: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Each step down multiplies the allowed share of full speed by this, each "
        "step up divides by it (between 0 and 1, exclusive).",
    )
    min_factor: float = Field(
        0.125,
        gt=0,
        le=1,
        description="The least share of full speed the agent slows to, however hot "
        "(above 0, at most 1; 1 never slows down).",
    )
    check_every_s: float = Field(
        10.0,
        gt=0,
        le=MAX_CHECK_EVERY_S,
        description="How often the sensors are read, in seconds, and so the least time between "
        f"two steps (above 0, at most {MAX_CHECK_EVERY_S:g}).",
    )
    thermal_zone: str | None = Field(
        None,
        description="A thermal zone's temp file (millidegrees) to read. Default: the kernel's "
        "thermal zones in sysfs (class/thermal/thermal_zone*/temp, on a Raspberry Pi and a "
        "Jetson alike), preferring a zone whose type is cpu-thermal, CPU-therm, soc_thermal or "
        "x86_pkg_temp, else the hottest.",
    )

    @field_validator("resume_c")
    @classmethod
    def _resume_below_limit(cls, value: float, info: ValidationInfo) -> float:
        limit = info.data.get("limit_c")
        if limit is not None and value >= limit:
            raise ValueError(
                f"must be below limit_c ({limit:g} °C), but got {value:g} °C: the rate would "
                "step down and up at the same temperature"
            )
        return value

    @field_validator("thermal_zone")
    @classmethod
    def _zone_is_a_path(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty: give a temp file's path, or leave it out")
        return value
