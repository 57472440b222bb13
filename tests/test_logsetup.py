"""edge_agent.logsetup: real logging through real handlers into a StringIO or a real file."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.logsetup import (
    RATE_LIMIT_MAX_TEMPLATES,
    RateLimitFilter,
    configure_logging,
    mask_secrets,
    stream_is_journal,
)

NO_JOURNAL: dict[str, str] = {}


class Clock:
    """Time that moves only when a test says so (the limiter's interval without waiting)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def journal_env(path: Path) -> dict[str, str]:
    st = os.stat(path)
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def limited(burst: int = 5, interval_s: float = 60.0) -> tuple[io.StringIO, RateLimitFilter, Clock]:
    """Logging set up by configure_logging with a limiter on a test clock."""
    out, clock = io.StringIO(), Clock()
    limiter = RateLimitFilter(burst, interval_s, clock=clock)
    configure_logging("INFO", stream=out, env=NO_JOURNAL, limiter=limiter)
    return out, limiter, clock


# --- Formats ---------------------------------------------------------------------------------


def test_text_format_outside_the_journal() -> None:
    out = io.StringIO()
    configure_logging("INFO", stream=out, env=NO_JOURNAL)
    logging.getLogger("edge_agent.x").warning("camera %s gone", "cam1")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING edge_agent\.x: "
        r"camera cam1 gone\n",
        out.getvalue(),
    )


def test_journal_stream_matched_by_device_and_inode(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    with path.open("w") as stream:
        configure_logging("DEBUG", stream=stream, env=journal_env(path))
        log = logging.getLogger("edge_agent.j")
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        log.critical("c")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    lines = path.read_text().splitlines()
    assert lines[:5] == [
        "<7>edge_agent.j: d",
        "<6>edge_agent.j: i",
        "<4>edge_agent.j: w",
        "<3>edge_agent.j: e",
        "<2>edge_agent.j: c",
    ]
    assert lines[5] == "<3>edge_agent.j: failed"
    # Every line of the traceback carries the priority, or journald would file it as info.
    assert len(lines) > 7 and all(line.startswith("<3>") for line in lines[5:])
    assert lines[-1] == "<3>RuntimeError: boom"


def test_journal_stream_of_another_file_is_not_the_journal(tmp_path: Path) -> None:
    journal, other = tmp_path / "journal", tmp_path / "other"
    journal.write_text("")
    with other.open("w") as stream:
        assert not stream_is_journal(stream, journal_env(journal))
        configure_logging("INFO", stream=stream, env=journal_env(journal))
        logging.getLogger("edge_agent.j").info("hello")
    assert re.fullmatch(r"\S+ \S+ INFO    edge_agent\.j: hello\n", other.read_text())


@pytest.mark.parametrize("value", ["", "12", "a:b", "1:2:3", ":"])
def test_malformed_journal_stream_is_not_the_journal(tmp_path: Path, value: str) -> None:
    with (tmp_path / "f").open("w") as stream:
        assert not stream_is_journal(stream, {"JOURNAL_STREAM": value})


def test_a_stream_without_a_file_is_not_the_journal() -> None:
    assert not stream_is_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


def test_json_lines_parse() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out, env=NO_JOURNAL)
    log = logging.getLogger("edge_agent.js")
    log.info("frame %d of %s", 3, 'cam "1"\nnext')
    try:
        raise ValueError("bad value")
    except ValueError:
        log.error("it failed")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["logger"] == "edge_agent.js" and first["level"] == "INFO"
    assert first["message"] == 'frame 3 of cam "1"\nnext'
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert "exception" not in first
    assert second["level"] == "ERROR" and second["message"] == "it failed"
    assert "exception" not in second  # log.error without exc_info
    out.truncate(0), out.seek(0)
    try:
        raise ValueError("bad value")
    except ValueError:
        log.exception("it failed")
    (third,) = (json.loads(line) for line in out.getvalue().splitlines())
    assert third["exception"].startswith("Traceback")
    assert third["exception"].endswith("ValueError: bad value")


def test_json_in_the_journal_has_the_priority_prefix(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    with path.open("w") as stream:
        configure_logging("INFO", "json", stream=stream, env=journal_env(path))
        logging.getLogger("edge_agent.js").warning("hot")
    line = path.read_text().rstrip("\n")
    assert line.startswith("<4>{")
    assert json.loads(line[3:])["message"] == "hot"


@pytest.mark.parametrize(
    ("name", "shown", "hidden"),
    [
        ("DEBUG", "d", ""),
        ("INFO", "i", "d"),
        ("WARNING", "w", "i"),
        ("ERROR", "e", "w"),
        ("info", "i", "d"),
    ],
)
def test_level_names_from_config(name: str, shown: str, hidden: str) -> None:
    out = io.StringIO()
    configure_logging(name, "json", stream=out, env=NO_JOURNAL)
    log = logging.getLogger("edge_agent.lv")
    for level, text in (
        (logging.DEBUG, "d"),
        (logging.INFO, "i"),
        (logging.WARNING, "w"),
        (logging.ERROR, "e"),
    ):
        log.log(level, text)
    messages = [json.loads(line)["message"] for line in out.getvalue().splitlines()]
    assert shown in messages and hidden not in messages


def test_every_config_level_and_format_is_accepted() -> None:
    from typing import get_args

    from edge_agent.config.agent import AgentConfig

    fields = AgentConfig.model_fields
    for level in get_args(fields["log_level"].annotation):
        for fmt in get_args(fields["log_format"].annotation):
            configure_logging(level, fmt, stream=io.StringIO(), env=NO_JOURNAL)
    assert fields["log_format"].default == "text"


@pytest.mark.parametrize("template", ["%d frames", "%s"])
def test_a_bad_format_argument_does_not_reach_the_caller(
    template: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: list[logging.LogRecord] = []
    handler = configure_logging("INFO", stream=io.StringIO(), env=NO_JOURNAL)
    monkeypatch.setattr(handler, "handleError", reported.append)
    # Only our handler: pytest's own capture handler raises on a bad record by design.
    log = logging.getLogger("edge_agent.bad")
    monkeypatch.setattr(log, "propagate", False)
    monkeypatch.setattr(log, "handlers", [handler])
    log.info(template, "x", "y")  # must not raise
    assert [r.msg for r in reported] == [template]


def test_bad_names_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"log_level: expected one of .*'INFO'.*got 'LOUD'"):
        configure_logging("LOUD", stream=io.StringIO())
    with pytest.raises(
        ValueError, match=r"log_format: expected one of \['text', 'json'\], got 'xml'"
    ):
        configure_logging("INFO", "xml", stream=io.StringIO())


def test_configuring_again_replaces_only_its_own_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    other = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(other)
    configure_logging("INFO", stream=first, env=NO_JOURNAL)
    configure_logging("INFO", stream=second, env=NO_JOURNAL)
    logging.getLogger("edge_agent.re").info("once")
    assert "once" not in first.getvalue() and second.getvalue().count("once") == 1
    assert other in logging.getLogger().handlers


# --- Rate limiting ---------------------------------------------------------------------------


def test_a_flood_is_capped_and_counted() -> None:
    out, limiter, _ = limited(burst=5)
    log = logging.getLogger("edge_agent.flood")
    for seq in range(1000):
        log.error("source %s: frame %d failed", "cam1", seq)
    limiter.flush()
    lines = out.getvalue().splitlines()
    assert len(lines) == 6
    assert all(lines[i].endswith(f"source cam1: frame {i} failed") for i in range(5))
    assert lines[5].endswith(
        "ERROR   edge_agent.flood: suppressed 995 similar messages in 60 s: "
        "source %s: frame %d failed"
    )


def test_the_note_comes_when_the_interval_is_over_and_the_next_window_opens() -> None:
    out, _, clock = limited(burst=2, interval_s=60)
    log = logging.getLogger("edge_agent.flood")
    for seq in range(10):
        log.warning("frame %d late", seq)
    clock.now += 59.9
    log.warning("frame %d late", 10)
    assert "suppressed" not in out.getvalue()
    clock.now += 0.2
    logging.getLogger("edge_agent.other").info("something else")
    lines = out.getvalue().splitlines()
    assert lines[-2].endswith("suppressed 9 similar messages in 60 s: frame %d late")
    assert lines[-1].endswith("something else")
    log.warning("frame %d late", 11)
    log.warning("frame %d late", 12)
    log.warning("frame %d late", 13)
    assert out.getvalue().splitlines()[-2:][0].endswith("frame 11 late")
    assert out.getvalue().splitlines()[-1].endswith("frame 12 late")


def test_templates_levels_and_loggers_are_limited_apart() -> None:
    out, limiter, _ = limited(burst=1)
    for _ in range(3):
        logging.getLogger("edge_agent.a").warning("one %s", "x")
        logging.getLogger("edge_agent.a").error("one %s", "x")
        logging.getLogger("edge_agent.b").warning("one %s", "x")
        logging.getLogger("edge_agent.a").warning("two %s", "x")
    limiter.flush()
    lines = out.getvalue().splitlines()
    assert len(lines) == 8
    assert sum("suppressed 2 similar" in line for line in lines) == 4


def test_a_placeholder_only_template_is_keyed_by_its_text() -> None:
    out, limiter, _ = limited(burst=1)
    log = logging.getLogger("edge_agent.p")
    for _ in range(3):
        log.error("%s", "camera cam1 gone")
        log.error("%s", "bundle unsigned")
    limiter.flush()
    text = out.getvalue()
    assert text.count("camera cam1 gone") == 2 and text.count("bundle unsigned") == 2
    assert text.count("suppressed 2 similar messages") == 2


def test_the_limit_holds_across_threads() -> None:
    out, limiter, _ = limited(burst=5)
    log = logging.getLogger("edge_agent.threads")

    def flood() -> None:
        for seq in range(250):
            log.error("frame %d failed", seq)

    threads = [threading.Thread(target=flood, name=f"flood-{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    limiter.flush()
    lines = out.getvalue().splitlines()
    assert len(lines) == 6 and lines[-1].endswith(
        "suppressed 995 similar messages in 60 s: frame %d failed"
    )


def test_closing_the_handler_reports_what_was_suppressed() -> None:
    out = io.StringIO()
    handler = configure_logging("INFO", stream=out, env=NO_JOURNAL, limiter=RateLimitFilter(1))
    for _ in range(4):
        logging.getLogger("edge_agent.c").info("tick")
    assert "suppressed" not in out.getvalue()
    handler.close()
    assert out.getvalue().splitlines()[-1].endswith("suppressed 3 similar messages in 60 s: tick")


def test_past_the_template_cap_records_pass_unlimited() -> None:
    out, limiter, _ = limited(burst=1)
    log = logging.getLogger("edge_agent.cap")
    for i in range(RATE_LIMIT_MAX_TEMPLATES):
        log.info(f"distinct {i}")
    for _ in range(3):
        log.info("one more %s", "x")
    limiter.flush()
    lines = out.getvalue().splitlines()
    assert len(lines) == RATE_LIMIT_MAX_TEMPLATES + 3 and "suppressed" not in out.getvalue()


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="burst >= 1"):
        RateLimitFilter(0, 60)


# --- Secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            "cannot open rtsp://admin:hunter2@10.0.0.5:554/s1; retrying",
            "cannot open rtsp://admin:***@10.0.0.5:554/s1; retrying",
        ),
        ("source 'http://tok3n@cam/x.mjpg' gone", "source 'http://***@cam/x.mjpg' gone"),
        ("GET https://h/api?api_key=abc123&size=2", "GET https://h/api?api_key=***&size=2"),
        ("login password=hunter2 user=agent", "login password=*** user=agent"),
        (
            "{'username': 'agent', 'password': 'hunter2'}",
            "{'username': 'agent', 'password': '***'}",
        ),
        ('{"token": "abc", "port": 1883}', '{"token": "***", "port": 1883}'),
        ("mqtt.password: hunter2, port: 8883", "mqtt.password: ***, port: 8883"),
        ("private_key=ABCDEF", "private_key=***"),
        ("frame 3 of cam1 at 12:00:01", "frame 3 of cam1 at 12:00:01"),
        ("rtsp://10.0.0.5/stream1", "rtsp://10.0.0.5/stream1"),
    ],
)
def test_mask_secrets(text: str, masked: str) -> None:
    assert mask_secrets(text) == masked


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_never_reach_the_stream(fmt: str) -> None:
    out = io.StringIO()
    configure_logging("INFO", fmt, stream=out, env=NO_JOURNAL)
    log = logging.getLogger("edge_agent.sec")
    log.warning("source %s: cannot open %s", "cam1", "rtsp://admin:hunter2@10.0.0.5/s")
    try:
        raise ConnectionError("rtsp://admin:hunter2@10.0.0.5/s refused (password=hunter2)")
    except ConnectionError:
        log.exception("reconnect to %s failed", "rtsp://admin:hunter2@10.0.0.5/s")
    text = out.getvalue()
    assert "hunter2" not in text
    assert "cannot open rtsp://admin:***@10.0.0.5/s" in text
    assert "reconnect to rtsp://admin:***@10.0.0.5/s failed" in text
    assert "ConnectionError: rtsp://admin:***@10.0.0.5/s refused (password=***)" in text


def test_a_suppression_note_of_a_secret_message_is_masked() -> None:
    out, limiter, _ = limited(burst=1)
    for _ in range(3):
        logging.getLogger("edge_agent.sec").error("%s", "rtsp://a:hunter2@h/ gone")
    limiter.flush()
    assert "hunter2" not in out.getvalue() and "suppressed 2 similar" in out.getvalue()
