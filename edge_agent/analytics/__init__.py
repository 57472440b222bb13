"""What the agent concludes over frames: counts per frame now; tracking, zones, lines, events and
shelf slots join as stages of a source's chain."""
