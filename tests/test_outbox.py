"""The durable outbox (edge_agent/publish/outbox.py) on a real SQLite file: order, bounds,
restarts, SIGKILL, damaged files, a full file, and concurrent use."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.publish.outbox import Outbox

ROOT = Path(__file__).resolve().parents[1]
#: Long enough that the writer thread never commits on its own during a test that flushes.
NEVER_S = 3600.0


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_outbox(path: Path, **kw: object) -> Outbox:
    args: dict[str, object] = {"max_bytes": 1_000_000, "max_age_s": 3600.0}
    args["commit_interval_s"] = NEVER_S
    args.update(kw)
    return Outbox(path, **args)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "outbox" / "outbox.db"


@pytest.fixture
def outbox(db: Path) -> Iterator[Outbox]:
    ob = make_outbox(db)
    yield ob
    ob.close()


def rows_on_disk(path: Path) -> list[tuple[int, str, bytes]]:
    """What another process would find in the file now (our own connection, no cache)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, topic, payload FROM messages ORDER BY id").fetchall()
    finally:
        conn.close()


def put_n(ob: Outbox, n: int, kind: str = "result", size: int = 10) -> list[int]:
    return [ob.put(kind, f"t/{kind}", b"%0*d" % (size, i), 1, False) for i in range(n)]


# -- order, pending, ack ------------------------------------------------------------------


def test_pending_sees_uncommitted_entries_in_order_with_their_fields(outbox: Outbox) -> None:
    a = outbox.put("result", "p/d/cam/result", b'{"a":1}', 1, False)
    b = outbox.put("snapshot", "p/d/cam/snapshot", b"\xff\xd8jpeg", 0, True)
    got = outbox.pending(0, 10)
    assert [e.id for e in got] == [a, b] and a < b
    assert (got[1].kind, got[1].topic, got[1].payload, got[1].qos, got[1].retain) == (
        "snapshot",
        "p/d/cam/snapshot",
        b"\xff\xd8jpeg",
        0,
        True,
    )
    assert outbox.pending(a, 10) == [got[1]]
    assert outbox.pending(0, 1) == [got[0]]


def test_pending_merges_disk_and_memory_in_id_order(outbox: Outbox, db: Path) -> None:
    first = put_n(outbox, 5)
    outbox.flush()
    second = put_n(outbox, 5)
    assert [r[0] for r in rows_on_disk(db)] == first
    assert [e.id for e in outbox.pending(0, 100)] == first + second
    assert [e.id for e in outbox.pending(first[2], 4)] == first[3:] + second[:2]


def test_acked_before_commit_never_reaches_disk(outbox: Outbox, db: Path) -> None:
    ids = put_n(outbox, 4)
    outbox.ack(ids[:3])
    outbox.flush()
    assert [r[0] for r in rows_on_disk(db)] == [ids[3]]
    assert outbox.depth == 1


def test_ack_of_committed_rows_hides_them_then_deletes_them(outbox: Outbox, db: Path) -> None:
    ids = put_n(outbox, 4)
    outbox.flush()
    outbox.ack([ids[0], ids[2]])
    assert [e.id for e in outbox.pending(0, 10)] == [ids[1], ids[3]]
    assert outbox.depth == 2
    outbox.flush()
    assert [r[0] for r in rows_on_disk(db)] == [ids[1], ids[3]]


def test_ids_keep_increasing_across_restarts_even_when_empty(db: Path) -> None:
    with make_outbox(db) as ob:
        ids = put_n(ob, 3)
        ob.flush()
        ob.ack(ids)
    with make_outbox(db) as ob:
        assert ob.depth == 0 and ob.pending(0, 10) == [] and ob.oldest_age_s is None
        assert ob.put("result", "t", b"x", 1, False) > ids[-1]


def test_close_commits_what_is_left_and_a_restart_finds_it(db: Path) -> None:
    with make_outbox(db) as ob:
        ids = put_n(ob, 7)
    with make_outbox(db) as ob:
        assert [e.id for e in ob.pending(0, 100)] == ids
        assert ob.depth == 7 and ob.bytes == 18 * 7
        assert ob.recovered_from is None


def test_the_writer_thread_commits_on_its_own(db: Path) -> None:
    with make_outbox(db, commit_interval_s=0.05) as ob:
        ids = put_n(ob, 3)
        deadline = time.monotonic() + 10
        while len(rows_on_disk(db)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [r[0] for r in rows_on_disk(db)] == ids


# -- bounds ---------------------------------------------------------------------------------


def test_bytes_bound_drops_the_oldest_and_counts_them_per_kind(db: Path) -> None:
    # Each entry is 10 payload + 8 topic bytes ("t/result", "t/count_") = 18 bytes.
    with make_outbox(db, max_bytes=18 * 10) as ob:
        old_results = put_n(ob, 4, "result")
        ob.flush()
        counts = put_n(ob, 4, "count_")
        ob.flush()
        newest = put_n(ob, 6, "result")
        ob.flush()
        assert ob.bytes <= 18 * 10
        assert [e.id for e in ob.pending(0, 100)] == counts + newest
        assert ob.drops() == {"result": 4}
        assert old_results[-1] < counts[0]


@pytest.mark.parametrize("committed", [True, False])
def test_the_bounds_never_drop_what_the_client_holds(db: Path, committed: bool) -> None:
    """Entries handed to the MQTT client (``hold``) are sent whatever happens here: the bounds
    drop the oldest after them, and counts stay true; hold(0) releases them."""
    with make_outbox(db, max_bytes=18 * 10) as ob:
        handed = put_n(ob, 3, "result")
        ob.hold(handed[-1])
        if committed:
            ob.flush()
        waiting = put_n(ob, 10, "result")
        ob.flush()
        left = [e.id for e in ob.pending(0, 100)]
        assert left[:3] == handed  # kept, though the oldest
        kept = left[3:]
        assert kept == waiting[len(waiting) - len(kept) :]  # the newest of the rest
        assert ob.drops().get("result", 0) == len(waiting) - len(kept)  # counted exactly
        assert ob.bytes <= 18 * 10 + 18 * len(handed)  # over by the held ones at most
        ob.hold(0)
        put_n(ob, 1, "count_")
        ob.flush()
        assert handed[0] not in [e.id for e in ob.pending(0, 100)]  # released: oldest go


@pytest.mark.parametrize(
    "bounds", [{"max_bytes": 18 * 5}, {"max_bytes": 10**6, "max_memory_bytes": 18 * 5}]
)
def test_memory_side_is_bounded_before_any_commit(db: Path, bounds: dict[str, int]) -> None:
    with make_outbox(db, **bounds) as small:
        ids = put_n(small, 12)
        assert [e.id for e in small.pending(0, 100)] == ids[-5:]
        assert small.drops() == {"result": 7} and small.bytes == 18 * 5


def test_age_bound_drops_old_entries_on_commit(db: Path) -> None:
    clock = FakeClock()
    with make_outbox(db, max_age_s=60.0, clock=clock) as ob:
        old = put_n(ob, 3, "event")
        ob.flush()
        clock.now += 30
        young = put_n(ob, 2, "result")
        assert ob.oldest_age_s == 30.0
        clock.now += 31  # the first three are 61 s old, the others 31 s
        ob.flush()
        assert [e.id for e in ob.pending(0, 100)] == young
        assert ob.drops() == {"event": 3} and old[-1] < young[0]
        assert ob.oldest_age_s == 31.0


def test_drops_survive_a_restart_and_take_drops_resets_them_on_disk(db: Path) -> None:
    with make_outbox(db, max_bytes=18 * 2) as ob:
        put_n(ob, 3, "result")
        put_n(ob, 2, "count_")
        ob.flush()
    with make_outbox(db, max_bytes=18 * 2) as ob:
        assert ob.drops() == {"result": 3}
        assert ob.take_drops() == {"result": 3}
        assert ob.drops() == {}
    with make_outbox(db, max_bytes=18 * 2) as ob:
        assert ob.drops() == {} and ob.depth == 2


# -- crashes and damage -----------------------------------------------------------------------

CHILD = """
import sys, time
from pathlib import Path
from typing import Any
from edge_agent.publish.outbox import Outbox
ob = Outbox(Path(sys.argv[1]), max_bytes=10**8, max_age_s=3600, commit_interval_s={interval})
n = 0
while True:
    t = time.time()
    i = ob.put("result", "t", b"%d" % n, 1, False)
    print(i, n, repr(t), flush=True)
    n += 1
    time.sleep(0.002)
"""


def test_sigkill_loses_at_most_the_last_commit_interval(db: Path, tmp_path: Path) -> None:
    interval, margin = 0.2, 0.5
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD.format(interval=interval)))
    db.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, str(script), str(db)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None
    put: list[tuple[int, int, float]] = []
    start = time.time()
    while time.time() - start < 2.0:
        line = child.stdout.readline()
        assert line, "the child died on its own"
        i, n, t = line.split()
        put.append((int(i), int(n), float(t)))
    child.send_signal(signal.SIGKILL)
    killed = time.time()
    child.wait()
    child.stdout.close()
    with make_outbox(db) as ob:
        got = ob.pending(0, 10**6)
    assert ob.recovered_from is None
    ids = [e.id for e in got]
    assert ids == sorted(set(ids))
    by_id = {i: n for i, n, _ in put}
    assert all(e.payload == b"%d" % by_id[e.id] for e in got if e.id in by_id)
    must_have = [i for i, _, t in put if t < killed - interval - margin]
    assert len(must_have) > 100
    assert set(must_have) <= set(ids)
    assert ids == list(range(1, len(ids) + 1))  # a prefix of what was put: nothing in between


def damage_garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database\n" * 200)


def damage_truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])


def damage_half_overwritten(path: Path) -> None:
    data = bytearray(path.read_bytes())
    half = len(data) // 2
    noise = bytes(range(256)) * (len(data) // 256 + 1)
    data[half:] = noise[: len(data) - half]
    path.write_bytes(bytes(data))


def damage_foreign_schema(path: Path) -> None:
    path.unlink()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, body TEXT)")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    "damage", [damage_garbage, damage_truncated, damage_half_overwritten, damage_foreign_schema]
)
def test_damaged_file_is_moved_aside_and_a_fresh_outbox_works(db: Path, damage: object) -> None:
    with make_outbox(db) as ob:
        put_n(ob, 300, size=1000)  # several pages, so damage lands inside the b-tree
    damage(db)  # type: ignore[operator]
    with make_outbox(db) as ob:
        assert ob.recovered_from is not None and ob.recovered_from.exists()
        assert ".damaged-" in ob.recovered_from.name and ob.recovered_from.parent == db.parent
        assert ob.depth == 0
        i = ob.put("result", "t", b"x", 1, False)
        ob.flush()
    with make_outbox(db) as ob:
        assert ob.recovered_from is None and [e.id for e in ob.pending(0, 10)] == [i]


def test_an_empty_file_is_a_new_outbox_not_damage(db: Path) -> None:
    db.parent.mkdir()
    db.touch()
    with make_outbox(db) as ob:
        assert ob.recovered_from is None and ob.depth == 0


# -- full file -----------------------------------------------------------------------------------


def cap_pages(ob: Outbox, pages: int) -> None:
    """PRAGMA max_page_count gives SQLITE_FULL exactly as a full disk does. It is a setting of
    one connection, so it goes through the outbox's own (private) write connection."""
    with ob._db_lock:
        ob._conn.execute(f"PRAGMA max_page_count = {pages}")


def test_full_file_keeps_rows_in_memory_and_commits_once_there_is_room(db: Path) -> None:
    with make_outbox(db, max_bytes=400_000, commit_interval_s=0.05) as ob:
        pages = ob._conn.execute("PRAGMA page_count").fetchone()[0]
        cap_pages(ob, pages)
        ids = put_n(ob, 100, size=1000)
        deadline = time.monotonic() + 10
        while ob.last_commit_error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ob.last_commit_error is not None and "full" in ob.last_commit_error
        assert [e.id for e in ob.pending(0, 1000)] == ids
        more = put_n(ob, 400, size=1000)  # beyond max_bytes: memory drops the oldest
        assert ob.bytes <= 400_000 and ob.drops()["result"] > 0
        assert ob._writer.is_alive()
        cap_pages(ob, 1_000_000)
        ob.flush()
        assert ob.last_commit_error is None
        kept = [e.id for e in ob.pending(0, 1000)]
        assert kept == (ids + more)[-len(kept) :]
    assert [r[0] for r in rows_on_disk(db)] == kept


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "error", "field"),
    [
        (("", "t", b"x", 1, False), ValueError, "kind"),
        (("result", "", b"x", 1, False), ValueError, "topic"),
        (("result", "t", "text", 1, False), TypeError, "payload"),
        (("result", "t", b"x", 3, False), ValueError, "qos"),
    ],
)
def test_bad_put_names_the_field(
    outbox: Outbox, args: tuple[object, ...], error: type[Exception], field: str
) -> None:
    with pytest.raises(error, match=field):
        outbox.put(*args)  # type: ignore[arg-type]
    assert outbox.depth == 0


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"max_bytes": 0}, "max_bytes"),
        ({"max_age_s": 0.0}, "max_age_s"),
        ({"commit_interval_s": -1.0}, "commit_interval_s"),
    ],
)
def test_bad_settings_name_the_field(db: Path, kw: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make_outbox(db, **kw)


def test_a_second_outbox_on_the_same_file_is_refused_until_the_first_closes(db: Path) -> None:
    first = make_outbox(db)
    with pytest.raises(RuntimeError, match="in use"):
        make_outbox(db)
    first.close()
    make_outbox(db).close()


def test_put_after_close_is_refused(db: Path) -> None:
    ob = make_outbox(db)
    ob.close()
    ob.close()
    with pytest.raises(RuntimeError, match="closed"):
        ob.put("result", "t", b"x", 1, False)


# -- concurrency and a model ---------------------------------------------------------------------


def test_concurrent_producers_and_a_sender_deliver_everything_once_in_order(db: Path) -> None:
    with make_outbox(db, commit_interval_s=0.01) as ob:
        per_thread, producers = 2000, 2

        def produce(k: int) -> None:
            for n in range(per_thread):
                ob.put("result", f"t/{k}", b"%d" % n, 1, False)

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
        for t in threads:
            t.start()
        sent: list[int] = []
        last = 0
        while len(sent) < per_thread * producers:
            batch = ob.pending(last, 97)
            if batch:
                sent.extend(e.id for e in batch)
                last = batch[-1].id
                ob.ack(e.id for e in batch)
        for t in threads:
            t.join()
        ob.flush()
        assert sent == list(range(1, per_thread * producers + 1))
        assert ob.depth == 0 and ob.pending(0, 10) == []
    assert rows_on_disk(db) == []


class PausedOutbox(Outbox):
    """Stops each commit after its transaction, before the memory is updated: the window a
    concurrent ack or pending() can fall into, held open so the test is not a race."""

    written: threading.Event
    go: threading.Event

    def _write(self, *args: Any, **kw: Any) -> Any:
        result = super()._write(*args, **kw)
        self.written.set()
        assert self.go.wait(10)
        return result


@pytest.fixture
def paused(db: Path) -> Iterator[tuple[PausedOutbox, threading.Thread]]:
    ob = PausedOutbox(db, max_bytes=10**6, max_age_s=3600.0, commit_interval_s=NEVER_S)
    ob.written, ob.go = threading.Event(), threading.Event()
    flusher = threading.Thread(target=ob.flush)
    yield ob, flusher
    ob.go.set()
    flusher.join()
    ob.close()


def test_rows_in_a_commit_just_written_are_pending_once(
    paused: tuple[PausedOutbox, threading.Thread],
) -> None:
    ob, flusher = paused
    ids = put_n(ob, 3)
    flusher.start()
    assert ob.written.wait(10)  # on disk and still in memory
    assert [e.id for e in ob.pending(0, 10)] == ids
    assert ob.depth == 3


def test_rows_acked_while_being_committed_are_deleted_next_commit(
    paused: tuple[PausedOutbox, threading.Thread], db: Path
) -> None:
    ob, flusher = paused
    ids = put_n(ob, 3)
    flusher.start()
    assert ob.written.wait(10)
    ob.ack(ids[:2])
    assert [e.id for e in ob.pending(0, 10)] == ids[2:] and ob.depth == 1
    ob.go.set()
    flusher.join()
    assert [r[0] for r in rows_on_disk(db)] == ids  # the commit wrote them before the ack
    assert [e.id for e in ob.pending(0, 10)] == ids[2:] and ob.depth == 1
    ob.flush()
    assert [r[0] for r in rows_on_disk(db)] == ids[2:]


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(1, 5)),
        st.tuples(st.just("ack"), st.integers(0, 6)),
        st.tuples(st.just("flush"), st.just(0)),
        st.tuples(st.just("reopen"), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(ops=OPS)
def test_matches_a_list_model_under_any_sequence(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int]]
) -> None:
    db = tmp_path_factory.mktemp("model") / "outbox.db"
    model: list[int] = []
    ob = make_outbox(db)
    try:
        for op, n in ops:
            if op == "put":
                model.extend(put_n(ob, n))
            elif op == "ack":
                chosen = model[::2][:n]
                ob.ack(chosen)
                model = [i for i in model if i not in chosen]
            elif op == "flush":
                ob.flush()
            else:
                ob.close()
                ob = make_outbox(db)
            assert [e.id for e in ob.pending(0, 1000)] == model
            assert ob.depth == len(model)
    finally:
        ob.close()


# -- settings ----------------------------------------------------------------------------------


def test_config_defaults_and_refusals_name_the_key() -> None:
    from pydantic import ValidationError

    from edge_agent.config.outbox import OutboxConfig

    cfg = OutboxConfig.model_validate({"max_age_s": 60}, strict=True)
    assert (cfg.path, cfg.max_bytes, cfg.max_age_s, cfg.commit_interval_s) == (
        None,
        256 * 2**20,
        60.0,
        1.0,
    )
    for key, bad in [("max_bytes", 1000), ("commit_interval_s", 0), ("max_age_s", -1), ("x", 1)]:
        with pytest.raises(ValidationError, match=key):
            OutboxConfig.model_validate({key: bad}, strict=True)
