"""Thermal pacing of the inference thread: when the CPU is too hot or the Pi throttles, the
thread rests after each inference so that it works only ``factor`` of the time
(``ThermalGovernor``, edge_agent/health/thermal.py); every source's frame rate falls with it,
live sources dropping what they cannot hand over. Each change is logged, set in the stats
registry (``health`` gauges) and said in the retained status."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edge_agent.config.thermal import ThermalConfig
from edge_agent.health.stats import StatsRegistry
from edge_agent.health.thermal import ThermalGovernor, ThermalState, pace

log = logging.getLogger(__name__)


class Pacer:
    """Asked by the inference thread after each inference: how long to rest."""

    def __init__(
        self,
        cfg: ThermalConfig,
        stats: StatsRegistry,
        on_change: Callable[[dict[str, Any] | None], None],
        governor: ThermalGovernor | None = None,
    ) -> None:
        self.enabled = cfg.enabled
        self.governor = governor if governor is not None else ThermalGovernor(cfg)
        self.on_change = on_change
        self.factor = 1.0
        self._factor_gauge = stats.gauge("health", "thermal_factor")
        self._temp_gauge = stats.gauge("health", "cpu_temp_c")
        self._throttled_gauge = stats.gauge("health", "throttled")
        self._factor_gauge.set(1.0)

    def rest_after(self, busy_s: float, now: float) -> float:
        """Seconds to rest after ``busy_s`` of inference (0 at full speed)."""
        if not self.enabled:
            return 0.0
        state = self.governor.poll(now)
        if state.changed:
            self._changed(state)
        return pace(busy_s, state.factor) if state.factor < 1.0 else 0.0

    def _changed(self, state: ThermalState) -> None:
        if state.temp_c is not None:
            self._temp_gauge.set(state.temp_c)
        self._throttled_gauge.set(1.0 if state.throttled else 0.0)
        self._factor_gauge.set(state.factor)
        if state.factor == self.factor:
            return
        slower = state.factor < self.factor
        self.factor = state.factor
        log.log(
            logging.WARNING if slower else logging.INFO,
            "thermal: inference at %d %% of full speed (%s)",
            round(state.factor * 100),
            state.reason,
        )
        info = None
        if state.factor < 1.0:
            info = {
                "factor": round(state.factor, 3),
                "temp_c": state.temp_c,
                "throttled": state.throttled,
                "reason": state.reason,
            }
        self.on_change(info)
