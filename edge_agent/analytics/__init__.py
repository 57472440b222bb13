"""What the agent concludes over frames, as stages of a source's chain. Importing this package
registers the built-in stage types; tracking, zones, lines, events, shelf slots and field
collection join here."""

from edge_agent.analytics import collect, counting, events, lines, slots, snapshots, tracking, zones

__all__ = ["collect", "counting", "events", "lines", "slots", "snapshots", "tracking", "zones"]
