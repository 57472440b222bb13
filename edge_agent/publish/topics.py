"""The MQTT contract's topic names (pure functions, no I/O); the payloads are in payloads.py.

docs/mqtt.md documents every topic for users: change it with this module. Everything here is
deterministic so it can be tested without a broker.
"""

from __future__ import annotations

import unicodedata

#: A source with this id would publish ``<p>/<dev>/cmd/result``, the topic of a command named
#: "result"; a device with this id would live under ``<p>/fleet/``, where fleet groups live.
RESERVED_SOURCE_IDS = frozenset({"cmd"})
RESERVED_DEVICE_IDS = frozenset({"fleet"})

_TOPIC_WILDCARDS = frozenset("/+#")
#: Topic levels after ``<src>/<kind>`` for each kind of stage publication.
PUBLICATION_LEVELS = {"zone": 2, "line": 1, "slot": 1, "event": 0, "snapshot": 0}


def _unsafe_in_topic(ch: str) -> bool:
    """True for characters that must not appear inside one topic level.

    ``/`` separates levels and ``+``/``#`` are wildcards. MQTT 3.1.1 section 1.5.3 forbids U+0000
    and says control characters (U+0001-U+001F, U+007F-U+009F) and Unicode non-characters SHOULD
    NOT appear; mosquitto closes the connection of a client that sends them, and paho would then
    resend the same QoS 1 message on every reconnect. Lone surrogates cannot be encoded as UTF-8.
    """
    if ch in _TOPIC_WILDCARDS or ch.isspace():
        return True
    if unicodedata.category(ch) in ("Cc", "Cs"):
        return True
    code = ord(ch)
    return 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE


def topic_level(text: str) -> str:
    """Make ``text`` safe as one topic level: unsafe characters become ``_``; empty becomes ``_``.

    Unsafe: ``/``, ``+``, ``#``, whitespace, NUL and other control characters, surrogates and
    Unicode non-characters. Distinct labels may map to the same level ("a b" and "a_b").
    """
    safe = "".join("_" if _unsafe_in_topic(ch) else ch for ch in text)
    return safe or "_"


class Topics:
    """Topic names for one device: ``<prefix>/<device>/...``.

    The prefix is used as given (it may hold several levels, e.g. ``site1/edgesight``; config.py
    refuses wildcards in it); the device id, source ids, labels and command names are passed
    through :func:`topic_level`.
    """

    def __init__(self, prefix: str, device_id: str) -> None:
        if not prefix or any(ch in prefix for ch in "+#") or prefix.startswith("/"):
            raise ValueError(
                f"topic prefix must be non-empty without '+', '#' or a leading '/', "
                f"but got {prefix!r}"
            )
        device = topic_level(device_id)
        if device in RESERVED_DEVICE_IDS:
            raise ValueError(
                f"device id {device_id!r} is reserved in topics; "
                f"choose another than {sorted(RESERVED_DEVICE_IDS)}"
            )
        self.prefix = prefix.rstrip("/")
        self.device_id = device_id
        self.base = f"{self.prefix}/{device}"

    def _source(self, src: str) -> str:
        level = topic_level(src)
        if level in RESERVED_SOURCE_IDS:
            raise ValueError(
                f"source id {src!r} is reserved in topics; "
                f"choose another than {sorted(RESERVED_SOURCE_IDS)}"
            )
        return f"{self.base}/{level}"

    def status(self) -> str:
        return f"{self.base}/status"

    def result(self, src: str) -> str:
        return f"{self._source(src)}/result"

    def count(self, src: str, label: str) -> str:
        return f"{self._source(src)}/count/{topic_level(label)}"

    def zone(self, src: str, zone: str, label: str) -> str:
        return f"{self._source(src)}/zone/{topic_level(zone)}/{topic_level(label)}"

    def line(self, src: str, line: str) -> str:
        return f"{self._source(src)}/line/{topic_level(line)}"

    def slot(self, src: str, slot: str) -> str:
        return f"{self._source(src)}/slot/{topic_level(slot)}"

    def publication(self, src: str, kind: str, levels: tuple[str, ...]) -> str:
        """The topic of a stage's publication (``types.Publication``): ``<src>/<kind>/<levels>``
        for zone, line and slot; ``<src>/event`` and ``<src>/snapshot`` take no levels."""
        want = PUBLICATION_LEVELS.get(kind)
        if want is None or len(levels) != want:
            raise ValueError(
                f"a {kind!r} publication takes {want} topic level(s), but got {levels!r}"
                if want is not None
                else f"unknown publication kind {kind!r}; expected one of "
                f"{sorted(PUBLICATION_LEVELS)}"
            )
        tail = "".join(f"/{topic_level(level)}" for level in levels)
        return f"{self._source(src)}/{kind}{tail}"

    def stats(self) -> str:
        return f"{self.base}/stats"

    def dropped(self) -> str:
        return f"{self.base}/dropped"

    def model(self) -> str:
        return f"{self.base}/model"

    def event(self, src: str) -> str:
        return f"{self._source(src)}/event"

    def snapshot(self, src: str) -> str:
        return f"{self._source(src)}/snapshot"

    def cmd(self, name: str) -> str:
        return f"{self.base}/cmd/{topic_level(name)}"

    def cmd_reply(self, name: str) -> str:
        return f"{self.cmd(name)}/reply"

    def cmd_filter(self) -> str:
        """Subscription filter matching every command (and, one level down, no replies)."""
        return f"{self.base}/cmd/+"


def check_source_ids(sources: list[str]) -> None:
    """Raise ValueError if a source id cannot be used in topics (see RESERVED_SOURCE_IDS)."""
    bad = [s for s in sources if topic_level(s) in RESERVED_SOURCE_IDS]
    if bad:
        raise ValueError(
            f"source ids {bad} are reserved in topics; choose others than "
            f"{sorted(RESERVED_SOURCE_IDS)}"
        )
