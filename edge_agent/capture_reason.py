"""Why a capture failed, in words a user understands, from FFmpeg's own lines.

The one place FFmpeg's messages are translated (STYLE.md 7). The lines come from
edge_agent.ffmpeg_log.collect() around the failed call; the rules below were taken from what
FFmpeg (libavformat 62, opencv-python 5.0) logged against the test cameras
(tests/test_ffmpeg_log.py, docs/capture-guard.md). The first rule that matches any line wins,
so the table is ordered from most to least specific; with no match the flags decide.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Call = Literal["open", "read", "get"]

#: "[rtsp @ 0x..] method DESCRIBE failed: 404 (Not Found)"; "[http @ 0x..] HTTP error 401 ...".
#: What an open failure says when FFmpeg logged nothing that names a cause.
NO_REASON = "the backend could not open it (no reason given)"
_STATUS = re.compile(
    r"^\[(?P<proto>rtsp|https?|tls|tcp)[^\]]*\] (?:method \w+ failed: |HTTP error )(?P<code>\d{3})"
)
_WORDS_BY_CODE = {
    400: "bad request",
    401: "not authorised ({p} 401: wrong user or password?)",
    403: "forbidden ({p} 403: the user may not see this stream)",
    404: "not found ({p} 404)",
    454: "session not found ({p} 454)",
    461: "transport not supported ({p} 461: try rtsp_transport tcp)",
}


@dataclass(frozen=True)
class Rule:
    """A line matching `pattern` means `words` (a format with the match's groups)."""

    pattern: re.Pattern[str]
    words: str | Callable[[re.Match[str]], str]


def _status_words(m: re.Match[str]) -> str:
    proto = "RTSP" if m["proto"] == "rtsp" else "HTTP"
    code = int(m["code"])
    if code in _WORDS_BY_CODE:
        return _WORDS_BY_CODE[code].format(p=proto)
    if code >= 500:
        return f"camera server error ({proto} {code})"
    return f"refused by the camera ({proto} {code})"


RULES: Sequence[Rule] = (
    Rule(_STATUS, _status_words),
    Rule(re.compile(r"Failed to resolve hostname|Name or service not known"), "host not found"),
    Rule(re.compile(r"Connection refused"), "connection refused"),
    Rule(re.compile(r"No route to host|Network is unreachable"), "host unreachable"),
    Rule(re.compile(r"Connection reset by peer|Broken pipe"), "connection reset by the camera"),
    Rule(
        re.compile(r"Immediate exit requested|Connection timed out|Stream timeout triggered"),
        "no answer within {timeout}",
    ),
    # A decoder's context ([mjpeg @ ..], [h264 @ ..]) complaining: the bytes arrive, no picture.
    Rule(
        re.compile(
            r"^\[(?:mjpeg|h264|hevc|mpeg4|vp[89]|av1)[^\]]*\] .*(?:invalid|error|No JPEG data|"
            r"no frame|missing)|Could not find codec parameters|[Dd]ecoder .*not found|"
            r"[Uu]nsupported codec"
        ),
        "stream opened but no frame could be decoded (unsupported codec?)",
    ),
    Rule(
        re.compile(r"Invalid data found when processing input"),
        "not a video stream the backend understands (invalid data)",
    ),
    Rule(re.compile(r"Stream ends prematurely|End of file"), "stream ended"),
)


def _seconds(timeout_s: float | None) -> str:
    return "the timeout" if timeout_s is None else f"{timeout_s:g} s"


def reason(
    lines: Iterable[str],
    *,
    timed_out: bool,
    opened: bool,
    kind: Call,
    frames: int = 0,
    timeout_s: float | None = None,
) -> str:
    """Short words for a failed `kind` call ("not found (RTSP 404)", "connection refused").

    `lines`: the backend's lines logged during the call; `timed_out`: a deadline ended it
    (ours or FFmpeg's interrupt); `opened`: the capture had opened before this call; `frames`:
    frames read since then (a read failing before the first frame points at the codec)."""
    text = [part for line in lines for part in line.splitlines() if part.strip()]
    for rule in RULES:
        for line in text:
            m = rule.pattern.search(line)
            if m is None:
                continue
            words = rule.words(m) if callable(rule.words) else rule.words
            return words.format(timeout=_seconds(timeout_s))
    if timed_out:
        return f"no answer within {_seconds(timeout_s)}"
    if kind == "open" or not opened:
        return NO_REASON
    if frames == 0:
        return "stream opened but no frame could be decoded (unsupported codec?)"
    return "stream ended"
