"""The agent's health: one stats registry (stats.py), the online/degraded verdict (state.py);
the systemd watchdog joins here (watchdog.py)."""

from edge_agent.health.stats import StatsRegistry

__all__ = ["StatsRegistry"]
