"""What the agent concludes over frames, as stages of a source's chain. Importing this package
registers the built-in stage types; tracking, zones, lines, events and shelf slots join here."""

from edge_agent.analytics import counting, events, lines, slots, snapshots, tracking, zones

__all__ = ["counting", "events", "lines", "slots", "snapshots", "tracking", "zones"]
