"""``health``: when the agent calls itself degraded, and when it recovers."""

from __future__ import annotations

from pydantic import Field

from edge_agent.config.base import Section
from edge_agent.config.thermal import ThermalConfig

#: A day: a longer wait would keep a device degraded for good after one failure.
MAX_DEGRADED_CLEAR_S = 86400.0


class HealthConfig(Section):
    degraded_clear_s: float = Field(
        30.0,
        ge=0,
        le=MAX_DEGRADED_CLEAR_S,
        description="Status goes back from degraded to online once frames have succeeded for "
        f"this long with no new failure (0 to {MAX_DEGRADED_CLEAR_S:g} s).",
    )
    thermal: ThermalConfig = Field(
        default_factory=ThermalConfig,
        description="Run slower while the CPU is too hot or the Pi throttles; see docs/thermal.md.",
    )
