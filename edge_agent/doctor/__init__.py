"""``edge-agent doctor``: check a device against its config and say what to fix."""

from edge_agent.doctor.checks import DEFAULT_TIMEOUT_S, Check, Report, Status, run_checks

__all__ = ["DEFAULT_TIMEOUT_S", "Check", "Report", "Status", "run_checks"]
