"""``health``: when the agent calls itself degraded, and when it recovers."""

from __future__ import annotations

from pydantic import Field

from edge_agent.config.base import Section


class HealthConfig(Section):
    degraded_clear_s: float = Field(
        30.0,
        ge=0,
        description="Status goes back from degraded to online once frames have succeeded for "
        "this long with no new failure.",
    )
