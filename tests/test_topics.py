"""The MQTT contract's topic names (no broker needed)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.publish.topics import Topics, check_source_ids, topic_level

# -- topics ------------------------------------------------------------------------------------


def test_topics_follow_the_contract() -> None:
    t = Topics("edgesight", "dev1")
    assert t.status() == "edgesight/dev1/status"
    assert t.result("cam1") == "edgesight/dev1/cam1/result"
    assert t.count("cam1", "cola") == "edgesight/dev1/cam1/count/cola"
    assert t.stats() == "edgesight/dev1/stats"
    assert t.model() == "edgesight/dev1/model"
    assert t.event("cam1") == "edgesight/dev1/cam1/event"
    assert t.snapshot("cam1") == "edgesight/dev1/cam1/snapshot"
    assert t.cmd("reboot") == "edgesight/dev1/cmd/reboot"
    assert t.cmd_reply("reboot") == "edgesight/dev1/cmd/reboot/reply"
    assert t.cmd_filter() == "edgesight/dev1/cmd/+"


def test_multi_level_prefix_is_kept_and_trailing_slash_dropped() -> None:
    assert Topics("site1/edgesight/", "dev1").status() == "site1/edgesight/dev1/status"


@pytest.mark.parametrize(
    ("label", "level"),
    [
        ("a/b", "a_b"),
        ("tin can", "tin_can"),
        ("+", "_"),
        ("#", "_"),
        ("x\x00y", "x_y"),
        ("tab\there", "tab_here"),
        ("bell\x07", "bell_"),
        ("", "_"),
        ("Ölflasche", "Ölflasche"),
    ],
)
def test_unsafe_labels_are_made_topic_safe(label: str, level: str) -> None:
    assert Topics("edgesight", "dev 1").count("cam/1", label) == (
        f"edgesight/dev_1/cam_1/count/{level}"
    )


@given(st.text())
def test_topic_level_is_one_safe_non_empty_level(text: str) -> None:
    level = topic_level(text)
    assert level
    assert not set(level) & {"/", "+", "#", "\x00"}
    assert not any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cs") for ch in level)
    assert len(level) == max(len(text), 1)
    level.encode("utf-8")  # always encodable


@given(
    st.text(
        alphabet=st.characters(categories=["L", "M", "N", "P", "S"], exclude_characters="/+#"),
        min_size=1,
    )
)
def test_topic_level_keeps_ordinary_text(text: str) -> None:
    assert topic_level(text) == text


def test_reserved_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="'cmd' is reserved"):
        Topics("edgesight", "dev1").result("cmd")
    with pytest.raises(ValueError, match="'fleet' is reserved"):
        Topics("edgesight", "fleet")


def test_prefix_with_wildcard_is_refused() -> None:
    with pytest.raises(ValueError, match="topic prefix"):
        Topics("edge/#", "dev1")


def test_check_source_ids_names_the_reserved_ones() -> None:
    check_source_ids(["cam1", "door"])
    with pytest.raises(ValueError, match=r"\['cmd'\] are reserved"):
        check_source_ids(["cam1", "cmd"])
