"""Logs fit for a field device (docs/logging.md): priorities the journal understands, JSON when
asked, floods of one message capped, and no credentials in any line.

``configure_logging`` installs one handler on the root logger; the commands call it instead of
``logging.basicConfig``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from edge_agent.publish.redact import REDACTED, is_secret_key, redact_url

#: The line outside the journal (every command's; the journal adds its own timestamp).
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: In the journal: no time (journald stamps each line) and no level name (the <N> prefix is it).
JOURNAL_FORMAT = "%(name)s: %(message)s"
#: systemd sets it for a service whose stderr is the journal: "<st_dev>:<st_ino>" of that stream
#: (systemd.exec(5), "$JOURNAL_STREAM").
ENV_JOURNAL_STREAM = "JOURNAL_STREAM"
#: The config's level names (AgentConfig.log_level) and the formats (AgentConfig.log_format).
LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
          "ERROR": logging.ERROR}  # fmt: skip
FORMATS = ("text", "json")
#: The same (logger, level, template) passes RATE_LIMIT_BURST times per RATE_LIMIT_INTERVAL_S;
#: a camera that fails every frame at 30 fps would otherwise write ~100 MB a day to the SD card.
RATE_LIMIT_BURST = 5
RATE_LIMIT_INTERVAL_S = 60.0
#: Templates the limiter follows at once; beyond this (messages built with f-strings, each its
#: own template) records pass unlimited rather than grow its memory without bound.
RATE_LIMIT_MAX_TEMPLATES = 1024


def syslog_priority(levelno: int) -> int:
    """sd-daemon's SD_CRIT (2), SD_ERR (3), SD_WARNING (4), SD_INFO (6), SD_DEBUG (7)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def stream_is_journal(stream: IO[str], env: Mapping[str, str]) -> bool:
    """Whether ``stream`` is the journal's: its device and inode are those $JOURNAL_STREAM names,
    the check systemd documents (a child that inherited the variable but not the stream fails)."""
    dev, colon, ino = env.get(ENV_JOURNAL_STREAM, "").partition(":")
    if not colon or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class JournalFormatter(logging.Formatter):
    """Every line (a traceback's too) starts with ``<N>``, so journald files each at the
    record's priority instead of the stream's default."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts (ISO 8601 UTC), level, logger, message, and exception when
    there is one (a traceback stays inside the line, escaped). In the journal the line starts
    with ``<N>``, which journald takes off: the stored message is the bare object."""

    def __init__(self, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        entry: dict[str, Any] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        line = json.dumps(entry, ensure_ascii=False)
        return f"<{syslog_priority(record.levelno)}>{line}" if self.journal else line


# --- No secrets ------------------------------------------------------------------------------

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
#: key=value, key: value, "key": "value", 'key': 'value' (dict reprs and JSON in messages).
_KEY_VALUE = re.compile(
    r"""(?P<key>[A-Za-z_][\w.-]*)(?P<q>['"]?)(?P<sep>\s*[=:]\s*)"""
    r"""(?P<value>'[^']*'|"[^"]*"|[^\s,;&'"})\]]+)"""
)


def mask_secrets(text: str) -> str:
    """``text`` with URL passwords (via redact_url) and the values of secret-named keys
    (password=, token: ...) replaced by ``***``."""

    def key_value(m: re.Match[str]) -> str:
        if not is_secret_key(m["key"].rsplit(".", 1)[-1]) or m["value"].strip("'\"") == REDACTED:
            return m[0]
        quote = m["value"][0] if m["value"][0] in "'\"" else ""
        return f"{m['key']}{m['q']}{m['sep']}{quote}{REDACTED}{quote}"

    return _KEY_VALUE.sub(key_value, _URL.sub(lambda m: redact_url(m[0]), text))


class RedactFilter(logging.Filter):
    """Masks credentials in the formatted message, the exception text and the stack of every
    record that reaches the handler (a record is changed in place, for every later handler)."""

    _exc_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # bad arguments: the handler reports them (handleError), not the caller
            return True
        masked = mask_secrets(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._exc_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info)
        return True


# --- Floods ----------------------------------------------------------------------------------

#: A template with nothing but placeholders ("%s") says nothing about which message it is.
_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[#0 +-]*[\d*]*(?:\.[\d*]+)?[diouxXeEfFgGcrsa%]")


@dataclass
class _Window:
    ends: float
    passed: int = 0
    suppressed: int = 0


class RateLimitFilter(logging.Filter):
    """Lets one (logger, level, template) through ``burst`` times per ``interval_s``; the rest
    are counted and reported as one line, "suppressed K similar messages", once the interval is
    over (with the next record that reaches the handler) or when the handler closes. Keyed by
    ``record.msg``, not the text, so "frame %d failed" for every frame is one flood; a template
    of placeholders only ("%s") is keyed by its text instead. Thread-safe."""

    NOTE = "suppressed %d similar messages in %.0f s: %s"

    def __init__(
        self,
        burst: int = RATE_LIMIT_BURST,
        interval_s: float = RATE_LIMIT_INTERVAL_S,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if burst < 1 or interval_s <= 0:
            raise ValueError(f"expected burst >= 1 and interval_s > 0, got {burst}, {interval_s}")
        self.burst, self.interval_s, self._clock = burst, interval_s, clock
        self._windows: dict[tuple[str, int, str], _Window] = {}
        self._next_due = float("inf")  # the earliest end of a window: sweep no sooner
        self._lock = threading.Lock()
        #: Where the notes go; configure_logging sets the handler this filter is on.
        self.emit_note: Callable[[logging.LogRecord], object] | None = None

    def _key(self, record: logging.LogRecord) -> tuple[str, int, str]:
        template = str(record.msg)
        if not _PLACEHOLDER.sub("", template).strip():
            try:
                template = record.getMessage()
            except Exception:  # bad arguments: keyed by the template, reported when written
                pass
        return record.name, record.levelno, template

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "rate_limit_note", False):
            return True
        key, now = self._key(record), self._clock()
        with self._lock:
            notes = self._take_notes(now) if now >= self._next_due else []
            window = self._windows.get(key)
            if window is None and len(self._windows) < RATE_LIMIT_MAX_TEMPLATES:
                window = self._windows[key] = _Window(ends=now + self.interval_s)
                self._next_due = min(self._next_due, window.ends)
            allowed = True
            if window is not None:
                window.passed += 1
                allowed = window.passed <= self.burst
                window.suppressed += not allowed
        self._send(notes)
        return allowed

    def flush(self) -> None:
        """Report what is suppressed so far (at exit: no count is lost with the process)."""
        with self._lock:
            notes = self._take_notes(None)
        self._send(notes)

    def _take_notes(self, now: float | None) -> list[logging.LogRecord]:
        """Close the windows that are over (all with ``now`` None); the notes they owe."""
        notes, self._next_due = [], float("inf")
        for key, window in list(self._windows.items()):
            if now is not None and now < window.ends:
                self._next_due = min(self._next_due, window.ends)
                continue
            del self._windows[key]
            if window.suppressed:
                name, level, template = key
                args = (window.suppressed, self.interval_s, template)
                note = logging.LogRecord(name, level, __file__, 0, self.NOTE, args, None)
                note.rate_limit_note = True
                notes.append(note)
        return notes

    def _send(self, notes: list[logging.LogRecord]) -> None:
        for note in notes:
            if self.emit_note is not None:
                self.emit_note(note)


class _Handler(logging.StreamHandler):
    """The root handler configure_logging installs: reports suppressed counts on close."""

    def __init__(self, stream: IO[str], limiter: RateLimitFilter) -> None:
        super().__init__(stream)
        self.limiter = limiter

    def close(self) -> None:
        self.limiter.flush()
        super().close()


def configure_logging(
    level: str,
    fmt: str = "text",
    *,
    stream: IO[str] | None = None,
    env: Mapping[str, str] = os.environ,
    limiter: RateLimitFilter | None = None,
) -> logging.Handler:
    """Log to ``stream`` (stderr) at ``level`` (a config name, "INFO") as ``fmt`` ("text" or
    "json"): journal priorities when the stream is the journal, floods capped, secrets masked.
    ``limiter`` replaces the default (5 per 60 s). Calling it again replaces the handler it
    installed (a reload); handlers others installed stay. A bad name raises ValueError naming
    the config field."""
    levelno = LEVELS.get(level.upper()) if isinstance(level, str) else None
    if levelno is None:
        raise ValueError(f"log_level: expected one of {sorted(LEVELS)}, got {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log_format: expected one of {list(FORMATS)}, got {fmt!r}")
    out = sys.stderr if stream is None else stream
    limiter = RateLimitFilter() if limiter is None else limiter
    handler = _Handler(out, limiter)
    journal = stream_is_journal(out, env)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(journal))
    elif journal:
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(limiter)
    handler.addFilter(RedactFilter())  # after the limiter: the notes quote templates too
    limiter.emit_note = handler.handle
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(levelno)
    return handler
