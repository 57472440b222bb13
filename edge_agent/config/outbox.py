"""``outbox``: the durable disk queue between the pipeline and the broker (docs/outbox.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge_agent.config.base import ConfigPath, Section

#: Below this the queue holds a few hundred results: less than one outage of a minute.
MIN_OUTBOX_BYTES = 64 * 1024
#: 16 GiB: more than the cards the agent runs from; a typo (an extra zero) is caught.
MAX_OUTBOX_BYTES = 16 * 1024**3
#: A year: older results are history, not telemetry.
MAX_OUTBOX_AGE_S = 365 * 86400.0
#: Ten seconds: a crash loses up to one interval of results.
MAX_COMMIT_INTERVAL_S = 10.0


class OutboxConfig(Section):
    path: ConfigPath | None = Field(
        None,
        description="The SQLite file of the queue; default <state_dir>/outbox/outbox.db.",
    )
    max_bytes: int = Field(
        256 * 1024**2,
        ge=MIN_OUTBOX_BYTES,
        le=MAX_OUTBOX_BYTES,
        description="Payload and topic bytes kept while the broker is away; the oldest go "
        f"first beyond it ({MIN_OUTBOX_BYTES:,} to {MAX_OUTBOX_BYTES:,}). With 1 KB "
        "payloads the file grows to about 1.35 x this; it does not shrink.",
    )
    max_age_s: float = Field(
        7 * 86400.0,
        gt=0,
        le=MAX_OUTBOX_AGE_S,
        description=f"Entries older than this are dropped (above 0, at most {MAX_OUTBOX_AGE_S:g} "
        "s; default 7 days).",
    )
    synchronous: Literal["full", "normal"] = Field(
        "full",
        description="full: every commit is fsynced, so a power cut loses at most one "
        "commit_interval_s; normal: a process crash loses at most that, a power cut up to "
        "what the kernel had not written back (about 30 s), with fewer writes to the card.",
    )
    commit_interval_s: float = Field(
        1.0,
        gt=0,
        le=MAX_COMMIT_INTERVAL_S,
        description="Queued messages are written to disk in one transaction this often; a "
        f"crash loses at most this much (above 0, at most {MAX_COMMIT_INTERVAL_S:g} s).",
    )
