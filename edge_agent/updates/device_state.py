"""``state.json``: what a device must remember about model updates across restarts.

- the highest bundle version accepted per model name: a bundle not above it is refused, even
  after a restart (an attacker or a stale desired document replaying an old, validly signed
  model: TUF's rollback attack);
- the last desired-state ``seq`` accepted per fleet group (replayed documents);
- sha256s rejected before, with the reason (a bad bundle is not downloaded again and again);
- the pending update, so that after a crash or power cut the agent knows what was in flight
  and can decide its outcome (store.ModelStore.recover).

Every change is written at once, atomically (fsutil.write_atomic: temp file, fsync, rename,
folder fsync): after a power cut the file is the old one or the new one. A file that cannot be
read back is moved aside with its bytes (fsutil.move_aside) and logged, never a crash; the
agent then starts as without it and ``damaged`` says so, for the updater to report.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from edge_agent.fsutil import move_aside, write_atomic

log = logging.getLogger(__name__)

SCHEMA = "edgesight.device-state/1"
#: The file holds a few counters and at most MAX_REJECTED reasons: a few KiB. Larger is damage.
MAX_STATE_BYTES = 1024 * 1024
#: Rejected sha256s remembered; the oldest are forgotten first (a bounded file on a small disk).
MAX_REJECTED = 200
#: A reason longer than this is cut: it comes from error messages that may quote a server.
MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class UpdateRecord:
    """The update in flight: enough to decide its outcome after a crash (ModelStore.recover)."""

    sha256: str  # of the bundle archive: models/<sha256>/
    name: str
    version: int
    state: str  # downloading | verifying | staged | trial (protocol states)
    origin: str  # "command" | "fleet:<group>"
    started: float  # time.time() when the update began
    previous_sha256: str | None  # models/current when it began
    boots: int = 0  # agent starts since the swap, during probation (crash-loop detection)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> UpdateRecord:
        """Raises ValueError naming the field that is missing or of the wrong type."""
        if not isinstance(data, dict):
            raise ValueError(f"pending: expected an object, got {type(data).__name__}")
        types: dict[str, tuple[type, ...]] = {
            "sha256": (str,), "name": (str,), "version": (int,), "state": (str,),
            "origin": (str,), "started": (int, float), "previous_sha256": (str, type(None)),
            "boots": (int,),
        }  # fmt: skip
        for f in fields(cls):
            value = data.get(f.name)
            if type(value) not in types[f.name]:
                raise ValueError(
                    f"pending.{f.name}: expected {' or '.join(t.__name__ for t in types[f.name])}"
                    f", got {type(value).__name__}"
                )
        return cls(**{f.name: data[f.name] for f in fields(cls)})


def _int_map(data: Mapping[str, Any], key: str) -> dict[str, int]:
    value = data.get(key, {})
    if not isinstance(value, dict) or any(type(v) is not int for v in value.values()):
        raise ValueError(f"{key}: expected an object of integers")
    return dict(value)


class DeviceState:
    """The update state kept in ``path`` (``<state_dir>/state.json``); thread-safe.

    Reads come from memory; each change writes the whole file before it returns, and raises
    OSError when it cannot (the caller must then not act as if it were recorded).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._versions: dict[str, int] = {}
        self._seqs: dict[str, int] = {}
        self._rejected: dict[str, str] = {}
        self._pending: UpdateRecord | None = None
        self._damaged: str | None = None

    @property
    def damaged(self) -> str | None:
        """What was wrong with the file the last load() moved aside, else None."""
        return self._damaged

    def load(self) -> None:
        """Read the file: a missing one is an empty state; a damaged one is moved aside."""
        with self._lock:
            self._versions, self._seqs, self._rejected, self._pending = {}, {}, {}, None
            self._damaged = None
            try:
                if self.path.stat().st_size > MAX_STATE_BYTES:
                    raise ValueError(f"larger than {MAX_STATE_BYTES} bytes")
                self._parse(json.loads(self.path.read_bytes().decode("utf-8")))
                return
            except FileNotFoundError:
                return
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                problem = str(exc) if not isinstance(exc, json.JSONDecodeError) else "not JSON"
            self._versions, self._seqs, self._rejected, self._pending = {}, {}, {}, None
            try:
                aside = move_aside(self.path)
            except OSError as exc:
                self._damaged = f"{self.path} is damaged ({problem}); moving it aside failed: {exc}"
            else:
                self._damaged = f"{self.path} was damaged ({problem}); moved aside to {aside.name}"
            log.error("update state: %s; starting without it (versions accepted before are "
                      "not known until the next update is accepted)", self._damaged)  # fmt: skip

    def _parse(self, data: Any) -> None:
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ValueError(f"expected a JSON object with schema {SCHEMA!r}")
        self._versions = _int_map(data, "versions")
        self._seqs = _int_map(data, "desired_seq")
        rejected = data.get("rejected", {})
        if not isinstance(rejected, dict) or any(not isinstance(v, str) for v in rejected.values()):
            raise ValueError("rejected: expected an object of strings")
        self._rejected = dict(rejected)
        pending = data.get("pending")
        self._pending = None if pending is None else UpdateRecord.from_json(pending)

    def _commit(
        self,
        versions: dict[str, int] | None = None,
        seqs: dict[str, int] | None = None,
        rejected: dict[str, str] | None = None,
        pending: UpdateRecord | None = None,
        *,
        set_pending: bool = False,
    ) -> None:
        """Write the state with the given parts changed, then keep them in memory: when the
        write fails (OSError) memory still matches the file. ``pending`` counts only with
        ``set_pending`` (None is a value there: no update in flight)."""
        new_versions = self._versions if versions is None else versions
        new_seqs = self._seqs if seqs is None else seqs
        new_rejected = self._rejected if rejected is None else rejected
        new_pending = pending if set_pending else self._pending
        body = {
            "schema": SCHEMA,
            "versions": new_versions,
            "desired_seq": new_seqs,
            "rejected": new_rejected,
            "pending": None if new_pending is None else new_pending.to_json(),
        }
        write_atomic(self.path, json.dumps(body, indent=1, sort_keys=True).encode() + b"\n")
        self._versions, self._seqs, self._rejected = new_versions, new_seqs, new_rejected
        self._pending = new_pending

    def highest_version(self, name: str) -> int | None:
        """The highest version of model ``name`` ever accepted, or None."""
        with self._lock:
            return self._versions.get(name)

    def accept_version(self, name: str, version: int) -> None:
        """Record ``version`` as accepted; ValueError unless above every earlier one."""
        with self._lock:
            last = self._versions.get(name)
            if last is not None and version <= last:
                raise ValueError(
                    f"model {name!r}: version {version} is not above the highest accepted, {last}"
                )
            self._commit(versions={**self._versions, name: version})

    def desired_seq(self, group: str) -> int | None:
        """The last desired-state seq accepted for ``group``, or None."""
        with self._lock:
            return self._seqs.get(group)

    def accept_seq(self, group: str, seq: int) -> None:
        """Record ``seq`` for ``group``; ValueError unless above the last one accepted."""
        with self._lock:
            last = self._seqs.get(group)
            if last is not None and seq <= last:
                raise ValueError(
                    f"group {group!r}: seq {seq} is not above the last accepted, {last}"
                )
            self._commit(seqs={**self._seqs, group: seq})

    def rejected(self, sha256: str) -> str | None:
        """Why the bundle ``sha256`` was rejected before, or None."""
        with self._lock:
            return self._rejected.get(sha256)

    def mark_rejected(self, sha256: str, reason: str) -> None:
        """Remember ``sha256`` as rejected (the newest MAX_REJECTED are kept)."""
        with self._lock:
            rejected = {k: v for k, v in self._rejected.items() if k != sha256}
            rejected[sha256] = reason[:MAX_REASON_CHARS]  # inserted last: the newest
            self._commit(rejected=dict(list(rejected.items())[-MAX_REJECTED:]))

    def forget_rejected(self, sha256: str) -> None:
        """Allow ``sha256`` again (an operator's explicit retry)."""
        with self._lock:
            if sha256 in self._rejected:
                self._commit(rejected={k: v for k, v in self._rejected.items() if k != sha256})

    @property
    def pending(self) -> UpdateRecord | None:
        with self._lock:
            return self._pending

    def set_pending(self, record: UpdateRecord) -> None:
        """Record the update in flight (call again with ``dataclasses.replace`` per state)."""
        with self._lock:
            self._commit(pending=record, set_pending=True)

    def clear_pending(self) -> None:
        with self._lock:
            if self._pending is not None:
                self._commit(pending=None, set_pending=True)
