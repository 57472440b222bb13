"""MqttPublisher against a real mosquitto: topic, payload, QoS and retain as seen by subscribers."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config import MqttConfig, TlsConfig
from edge_agent.demo.broker import free_port
from edge_agent.health.stats import StatsRegistry
from edge_agent.pipeline.stages import Sinks
from edge_agent.publish.paho_support import describe_code, guarded
from edge_agent.publish.payloads import result_payload
from edge_agent.publish.publisher import MqttPublisher
from edge_agent.types import Detections, Publication, Result
from tests.helpers.mqtt import Broker, Recorder
from tests.helpers.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
#: The connection (client.py) logs outages, reconnects and drops.
LOGGER = "edge_agent.publish.client"
MODEL = {"name": "shelf-items", "version": 7, "sha256": "ab" * 32}
#: Test timings: a short keep-alive and fast reconnects keep the whole file quick.
KEEPALIVE_S = 5
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 0.4
WAIT_S = 10.0

RecorderFactory = Callable[..., Recorder]


def make_config(
    broker: Broker | None = None, port: int | None = None, **overrides: Any
) -> MqttConfig:
    return MqttConfig(
        host="127.0.0.1",
        port=port or (broker.port if broker else free_port()),
        keepalive_s=KEEPALIVE_S,
        reconnect_min_delay_s=RECONNECT_MIN_S,
        reconnect_max_delay_s=RECONNECT_MAX_S,
        **overrides,
    )


def make_result(seq: int = 0, source_id: str = "cam1") -> Result:
    det = Detections(
        xyxy=np.array([[64, 48, 320, 288]], np.float32),
        confidence=np.array([0.9], np.float32),
        class_id=np.array([1], np.int32),
        tracker_id=np.array([5], np.int64),
    )
    return Result(
        source_id=source_id,
        seq=seq,
        ts=1_790_000_000.0 + seq / 10,
        model="shelf-items@7",
        task="detect",
        labels=["cola", "water"],
        frame_size=(640, 480),
        predictions=det,
        counts={"water": 1},
        timing_ms={"inference": 7.5},
    )


def warnings_matching(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.levelno == logging.WARNING and text in r.getMessage()
    ]


@pytest.fixture
def device_id() -> str:
    return f"dev-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_publisher(device_id: str) -> Iterator[Callable[..., MqttPublisher]]:
    made: list[MqttPublisher] = []

    def factory(
        cfg: MqttConfig, sources: tuple[str, ...] = ("cam1",), stats: StatsRegistry | None = None
    ) -> MqttPublisher:
        publisher = MqttPublisher(cfg, device_id, "0.1.0", MODEL, list(sources), stats=stats)
        made.append(publisher)
        return publisher

    yield factory
    for publisher in made:
        publisher.close(timeout_s=1.0)


def started(make_publisher: Callable[..., MqttPublisher], broker: Broker) -> MqttPublisher:
    publisher = make_publisher(make_config(broker))
    publisher.start()
    assert wait_until(lambda: publisher.connected), "publisher did not connect"
    return publisher


# -- status ------------------------------------------------------------------------------------


def broker_has(
    mqtt_recorder: RecorderFactory, broker: Broker, topic: str, key: str, value: Any
) -> bool:
    """Wait until the broker has passed on a message with ``value`` at ``key`` on ``topic``.
    Publishing is asynchronous: a subscriber that connects right after a publish call may
    otherwise still get the old retained message, or the new one live (retain flag off)."""
    watcher = mqtt_recorder(broker, topic)
    return watcher.wait_for(
        lambda: any(json.loads(m.payload)[key] == value for m in watcher.on(topic))
    )


def test_status_online_is_retained_for_later_subscribers(
    broker: Broker, mqtt_recorder: RecorderFactory, make_publisher: Any, device_id: str
) -> None:
    publisher = started(make_publisher, broker)
    topic = f"edgesight/{device_id}/status"
    assert broker_has(mqtt_recorder, broker, topic, "state", "online")
    late = mqtt_recorder(broker, "edgesight/#")  # connects after the status went out
    assert late.wait_for(lambda: late.on(topic))
    (msg,) = late.on(topic)
    assert msg.retain and msg.qos == 1
    status = json.loads(msg.payload)
    assert status["state"] == "online"
    assert status["agent_version"] == "0.1.0"
    assert status["model"] == MODEL
    assert status["sources"] == ["cam1"]
    assert abs(status["ts"] - time.time()) < 60
    assert publisher.metrics.connects.value == 1


def test_set_status_degraded_is_retained_and_bad_state_refused(
    broker: Broker, mqtt_recorder: RecorderFactory, make_publisher: Any, device_id: str
) -> None:
    publisher = started(make_publisher, broker)
    publisher.set_status("degraded")
    with pytest.raises(ValueError, match="one of"):
        publisher.set_status("sleepy")
    topic = f"edgesight/{device_id}/status"
    assert broker_has(mqtt_recorder, broker, topic, "state", "degraded")
    late = mqtt_recorder(broker, topic)
    assert late.wait_for(lambda: late.on(topic))
    (msg,) = late.on(topic)
    assert msg.retain and json.loads(msg.payload)["state"] == "degraded"


def test_set_model_republishes_the_status_with_the_new_model(
    broker: Broker, mqtt_recorder: RecorderFactory, make_publisher: Any, device_id: str
) -> None:
    publisher = started(make_publisher, broker)
    publisher.set_status("degraded")
    swapped = {**MODEL, "version": 8}
    publisher.set_model(swapped)
    topic = f"edgesight/{device_id}/status"
    assert broker_has(mqtt_recorder, broker, topic, "model", swapped)
    late = mqtt_recorder(broker, topic)
    assert late.wait_for(lambda: late.on(topic))
    (msg,) = late.on(topic)
    assert msg.retain and msg.qos == 1
    assert json.loads(msg.payload)["state"] == "degraded"  # the state is kept
    assert json.loads(msg.payload)["model"] == swapped
    publisher.close()
    final = mqtt_recorder(broker, topic)
    assert final.wait_for(lambda: final.on(topic))
    assert json.loads(final.on(topic)[0].payload)["model"] == swapped


def test_close_leaves_offline_retained_and_is_idempotent(
    broker: Broker, mqtt_recorder: RecorderFactory, make_publisher: Any, device_id: str
) -> None:
    publisher = started(make_publisher, broker)
    publisher.close()
    publisher.close()
    assert not publisher.connected
    topic = f"edgesight/{device_id}/status"
    late = mqtt_recorder(broker, topic)
    assert late.wait_for(lambda: late.on(topic))
    (msg,) = late.on(topic)
    assert msg.retain and json.loads(msg.payload)["state"] == "offline"
    publisher.publish_result(make_result())  # after close: counted, not sent
    assert publisher.metrics.dropped.value == 1


WILL_SCRIPT = """
import sys, time
from edge_agent.config import MqttConfig
from edge_agent.publish.publisher import MqttPublisher
cfg = MqttConfig(host="127.0.0.1", port=int(sys.argv[1]), keepalive_s=5)
publisher = MqttPublisher(cfg, sys.argv[2], "0.1.0", None, ["cam1"])
publisher.start()
time.sleep(60)
"""


def test_last_will_marks_a_killed_agent_offline(
    broker: Broker, mqtt_recorder: RecorderFactory, device_id: str
) -> None:
    topic = f"edgesight/{device_id}/status"
    recorder = mqtt_recorder(broker, topic)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WILL_SCRIPT, str(broker.port), device_id], cwd=REPO, env=env
    )
    try:
        assert recorder.wait_for(lambda: [s["state"] for s in recorder.json(topic)] == ["online"])
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=WAIT_S)
        assert recorder.wait_for(lambda: len(recorder.json(topic)) == 2)
    finally:
        proc.kill()
        proc.wait()
    assert recorder.json(topic)[1]["state"] == "offline"
    late = mqtt_recorder(broker, topic)
    assert late.wait_for(lambda: late.on(topic))
    (msg,) = late.on(topic)
    assert msg.retain and msg.qos == 1
    assert json.loads(msg.payload)["state"] == "offline"
    assert json.loads(msg.payload)["sources"] == ["cam1"]


# -- results and counts ------------------------------------------------------------------------


def test_result_is_qos1_and_not_retained(
    broker: Broker, mqtt_recorder: RecorderFactory, make_publisher: Any, device_id: str
) -> None:
    recorder = mqtt_recorder(broker, "edgesight/#")
    publisher = started(make_publisher, broker)
    result = make_result(seq=3)
    publisher.publish_result(result)
    topic = f"edgesight/{device_id}/cam1/result"
    assert recorder.wait_for(lambda: recorder.on(topic))
    (msg,) = recorder.on(topic)
    assert msg.qos == 1 and not msg.retain
    assert json.loads(msg.payload) == json.loads(
        json.dumps(result_payload(result, device_id, publisher.run_id))
    )
    # A later subscriber gets the retained status but no result.
    late = mqtt_recorder(broker, "edgesight/#")
    assert late.wait_for(lambda: late.on(f"edgesight/{device_id}/status"))
    time.sleep(0.2)
    assert not late.on(topic)
    # status + result (the status goes out in paho's thread, which may still be at it)
    assert wait_until(lambda: publisher.metrics.published.value == 2)
    assert publisher.metrics.dropped.value == 0


def test_counts_are_retained_and_only_changes_republished(
    broker: Broker, mqtt_recorder: RecorderFactory, make_publisher: Any, device_id: str
) -> None:
    recorder = mqtt_recorder(broker, "edgesight/#")
    publisher = started(make_publisher, broker)
    base = f"edgesight/{device_id}/cam1/count"
    publisher.publish_counts("cam1", {"cola": 1, "water": 0}, ts=1.0)  # first: all, zeros too
    publisher.publish_counts("cam1", {"cola": 1, "water": 2}, ts=2.0)  # water changed
    publisher.publish_counts("cam1", {"cola": 1, "water": 2}, ts=3.0)  # nothing changed
    publisher.publish_counts("cam1", {"tin can": 4}, ts=4.0)  # new label; also a barrier
    assert recorder.wait_for(lambda: recorder.on(f"{base}/tin_can"))
    got = [(m.topic.removeprefix(base + "/"), json.loads(m.payload)) for m in recorder.messages
           if m.topic.startswith(base)]  # fmt: skip
    run = publisher.run_id  # in every payload: consumers tell runs apart by it
    assert got == [
        ("cola", {"count": 1, "ts": 1.0, "run": run}),
        ("water", {"count": 0, "ts": 1.0, "run": run}),
        ("water", {"count": 2, "ts": 2.0, "run": run}),
        ("tin_can", {"count": 4, "ts": 4.0, "run": run}),
    ]
    assert all(m.qos == 1 for m in recorder.messages if m.topic.startswith(base))
    late = mqtt_recorder(broker, f"{base}/#")
    assert late.wait_for(lambda: len(late.messages) == 3)
    assert all(m.retain for m in late.messages)
    assert {m.topic: json.loads(m.payload)["count"] for m in late.messages} == {
        f"{base}/cola": 1,
        f"{base}/water": 2,
        f"{base}/tin_can": 4,
    }


def test_as_a_sink_emit_publishes_the_result_then_its_counts(
    broker: Broker, mqtt_recorder: RecorderFactory, make_publisher: Any, device_id: str
) -> None:
    recorder = mqtt_recorder(broker, "edgesight/#")
    stats = StatsRegistry()
    publisher = make_publisher(make_config(broker), stats=stats)
    publisher.start()
    assert wait_until(lambda: publisher.connected)
    sinks = Sinks([publisher], stats)  # as the pipeline holds it
    assert not sinks.needs_frame
    first, second = make_result(seq=1), make_result(seq=2)
    sinks.emit(first, None)
    sinks.emit(second, None)  # same counts: only the result goes out
    base = f"edgesight/{device_id}/cam1"
    assert recorder.wait_for(lambda: len(recorder.on(f"{base}/result")) == 2)
    got = [m for m in recorder.messages if m.topic.startswith(base)]
    assert [m.topic for m in got] == [f"{base}/result", f"{base}/count/water", f"{base}/result"]
    result, count, _ = got
    assert result.qos == 1 and not result.retain
    assert json.loads(result.payload) == json.loads(
        json.dumps(result_payload(first, device_id, publisher.run_id))
    )
    assert count.qos == 1 and json.loads(count.payload) == {
        "count": 1,
        "ts": first.ts,
        "run": publisher.run_id,
    }
    late = mqtt_recorder(broker, f"{base}/count/#")
    assert late.wait_for(lambda: late.messages)
    assert late.messages[0].retain
    # The figures are in the registry it was given, under the publisher and the sink "mqtt".
    assert wait_until(lambda: publisher.metrics.published.value == 4)
    assert stats.publisher().published.value == 4
    assert stats.publisher().connected.value == 1
    assert stats.sink("mqtt").errors.value == 0 and stats.sink("mqtt").ms.count == 2
    sinks.close()
    assert stats.publisher().connected.value == 0
    assert not publisher.connected


# -- outages -----------------------------------------------------------------------------------


def test_broker_down_at_start_then_queued_results_arrive(
    persistent_broker: Broker,
    mqtt_recorder: RecorderFactory,
    make_publisher: Any,
    device_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    broker = persistent_broker
    # A persistent session keeps the subscription (and the QoS 1 messages queued for it) across
    # the restart, so the results cannot slip past before the recorder is back.
    recorder = mqtt_recorder(broker, "edgesight/#", persistent_session=True)
    broker.stop()
    publisher = make_publisher(make_config(broker))
    publisher.start()  # must not raise with the broker down
    for seq in range(3):
        publisher.publish_result(make_result(seq=seq))
    time.sleep(1.0)  # several reconnect attempts at 0.1-0.4 s
    assert not publisher.connected
    assert len(warnings_matching(caplog, "unreachable")) == 1
    broker.start()
    topic = f"edgesight/{device_id}/cam1/result"
    assert recorder.wait_for(lambda: len(recorder.on(topic)) == 3)
    assert [r["seq"] for r in recorder.json(topic)] == [0, 1, 2]
    status = f"edgesight/{device_id}/status"
    assert recorder.wait_for(lambda: recorder.json(status))
    assert recorder.json(status)[-1]["state"] == "online"
    assert publisher.connected
    assert publisher.metrics.connects.value == 1
    assert publisher.metrics.dropped.value == 0
    assert len(warnings_matching(caplog, "unreachable")) == 1
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(m.startswith(f"connected to broker 127.0.0.1:{broker.port}") for m in infos)


def test_broker_restart_reconnects_with_one_warning_per_outage(
    broker: Broker,
    mqtt_recorder: RecorderFactory,
    make_publisher: Any,
    device_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    publisher = started(make_publisher, broker)
    publisher.publish_counts("cam1", {"cola": 1}, ts=1.0)
    for outage in (1, 2):
        broker.stop()
        assert wait_until(lambda: not publisher.connected)
        time.sleep(1.0)  # several failed reconnect attempts
        assert len(warnings_matching(caplog, "unreachable")) == outage
        broker.start()
        assert wait_until(lambda: publisher.connected)
        assert publisher.metrics.connects.value == outage + 1
        assert publisher.metrics.disconnects.value == outage
    assert len(warnings_matching(caplog, "unreachable")) == 2
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert sum(m.startswith("reconnected to broker") for m in infos) == 2
    # The restarted broker kept nothing; the status was announced again on reconnect.
    status = f"edgesight/{device_id}/status"
    assert broker_has(mqtt_recorder, broker, status, "state", "online")
    late = mqtt_recorder(broker, status)
    assert late.wait_for(lambda: late.json(status))
    assert late.json(status)[0]["state"] == "online" and late.on(status)[0].retain
    # ...and unchanged counts are republished after a reconnect, since their retained copies
    # may be gone.
    publisher.publish_counts("cam1", {"cola": 1}, ts=2.0)
    count = f"edgesight/{device_id}/cam1/count/cola"
    assert broker_has(mqtt_recorder, broker, count, "ts", 2.0)
    late = mqtt_recorder(broker, count)
    assert late.wait_for(lambda: late.json(count))
    assert late.json(count) == [{"count": 1, "ts": 2.0, "run": publisher.run_id}]
    assert late.on(count)[0].retain


def test_full_queue_drops_are_counted_and_logged_once(
    make_publisher: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    publisher = make_publisher(make_config(port=free_port(), max_queued_messages=2))
    publisher.start()  # nothing listens on that port
    for seq in range(5):
        publisher.publish_result(make_result(seq=seq))
    assert publisher.metrics.published.value == 2
    assert publisher.metrics.dropped.value == 3
    assert len(warnings_matching(caplog, "dropping MQTT messages")) == 1
    assert "Message queue full" in warnings_matching(caplog, "dropping")[0]
    started_at = time.monotonic()
    publisher.close(timeout_s=1.0)  # broker unreachable: nothing to wait for
    assert time.monotonic() - started_at < 2.5


def test_exception_in_a_callback_does_not_stop_the_network_thread(
    broker: Broker,
    mqtt_recorder: RecorderFactory,
    make_publisher: Any,
    device_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = mqtt_recorder(broker, "edgesight/#")
    publisher = make_publisher(make_config(broker))

    def boom(*args: Any) -> None:
        raise RuntimeError("boom")

    publisher.client._on_log = boom  # type: ignore[method-assign]  # paho logs on every packet
    publisher.start()
    assert wait_until(lambda: publisher.connected)
    publisher.publish_result(make_result())
    assert recorder.wait_for(lambda: recorder.on(f"edgesight/{device_id}/cam1/result"))
    assert any("error in MQTT log callback" in r.getMessage() for r in caplog.records)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_network_thread_is_replaced_by_the_liveness_check(
    broker: Broker,
    mqtt_recorder: RecorderFactory,
    make_publisher: Any,
    device_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Should paho's thread die (an exception outside any callback), the heartbeat's check
    starts a new client, which reconnects and publishes again."""
    recorder = mqtt_recorder(broker, "edgesight/#")
    publisher = started(make_publisher, broker)
    paho = publisher.client._client
    assert paho is not None

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug inside paho")

    paho._loop = broken  # type: ignore[method-assign]  # what loop_forever calls each turn
    thread = paho._thread
    assert thread is not None
    thread.join(WAIT_S)  # the thread dies of it
    assert not thread.is_alive()
    assert publisher.client.check_alive() is False  # noticed and replaced
    assert publisher.client._client is not paho
    assert wait_until(lambda: publisher.connected)
    assert publisher.metrics.restarts.value == 1
    assert any("network thread has died" in r.getMessage() for r in caplog.records)
    publisher.publish_result(make_result(seq=7))
    topic = f"edgesight/{device_id}/cam1/result"
    assert recorder.wait_for(
        lambda: any(json.loads(m.payload)["seq"] == 7 for m in recorder.on(topic))
    )
    assert publisher.client.check_alive() is True


def test_credentials_are_used_and_a_refusal_is_one_warning(
    tmp_path: Path, make_publisher: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "agent", "s3cret"], check=True)
    broker = Broker(tmp_path, password_file=passwords)
    broker.start()
    try:
        good = make_publisher(make_config(broker, username="agent", password="s3cret"))
        good.start()
        assert wait_until(lambda: good.connected)
        bad = make_publisher(make_config(broker, username="agent", password="wrong"))
        bad.start()
        time.sleep(1.0)  # several refused attempts
        assert not bad.connected and bad.metrics.connects.value == 0
        (warning,) = warnings_matching(caplog, "unreachable")
        assert "Not authorized" in warning
        assert broker.log().count("not authorised") >= 2  # it did keep retrying
    finally:
        broker.stop()


# -- caller mistakes and helpers ---------------------------------------------------------------


def test_caller_mistakes_raise() -> None:
    with pytest.raises(ValueError, match="'cmd'"):
        MqttPublisher(make_config(), "dev1", "0.1.0", None, ["cmd"])
    publisher = MqttPublisher(make_config(), "dev1", "0.1.0", None, ["cam1"])
    with pytest.raises(RuntimeError, match="start"):
        publisher.publish_result(make_result())
    publisher.close()  # never started: nothing to do
    with pytest.raises(RuntimeError, match="once"):
        publisher.start()


def test_unreadable_tls_file_is_a_value_error(tmp_path: Path) -> None:
    cfg = make_config(tls=TlsConfig(ca_file=tmp_path / "missing-ca.pem"))
    publisher = MqttPublisher(cfg, "dev1", "0.1.0", None, ["cam1"])
    with pytest.raises(ValueError, match=r"mqtt\.tls"):
        publisher.start()


def test_describe_code_names_reason_and_error_codes() -> None:
    refused = ReasonCode(PacketTypes.CONNACK, "Not authorized")
    assert describe_code(refused) == "Not authorized (reason code 135)"
    assert describe_code(MQTTErrorCode.MQTT_ERR_QUEUE_SIZE) == (
        "Message queue full (MQTT_ERR_QUEUE_SIZE)"
    )
    assert describe_code(4) == "The client is not currently connected (MQTT_ERR_NO_CONN)"
    assert describe_code(999) == "unknown paho code 999"


def test_guarded_logs_and_swallows(caplog: pytest.LogCaptureFixture) -> None:
    def bad(x: int) -> None:
        raise KeyError(x)

    guarded("message", bad)(1)
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert record.levelno == logging.ERROR
    assert "message callback" in record.getMessage() and record.exc_info


# -- stage publications (zones, lines, slots, events, snapshots) -------------------------------


def test_stage_publications_go_to_their_topics_with_their_flags_and_survive_a_restart(
    broker: Broker, mqtt_recorder: RecorderFactory, make_publisher: Any, device_id: str
) -> None:
    recorder = mqtt_recorder(broker, "edgesight/#")
    publisher = started(make_publisher, broker)
    result = make_result(seq=3)
    jpeg = b"\xff\xd8 not really a jpeg \xff\xd9"
    result.publications = [
        Publication("zone", ("aisle 1", "cola"), {"count": 2, "ts": result.ts}),
        Publication("line", ("door",), {"in": 4, "out": 1, "ts": result.ts}),
        Publication("slot", ("top-left",), {"state": "out", "ts": result.ts}),
        Publication("event", (), {"type": "out_of_stock", "id": "e1", "ts": result.ts}),
        Publication("snapshot", (), jpeg),
    ]
    publisher.emit(result, None)
    base = f"edgesight/{device_id}/cam1"
    expected = {  # topic: (retained, QoS)
        f"{base}/zone/aisle_1/cola": (True, 1),
        f"{base}/line/door": (True, 1),
        f"{base}/slot/top-left": (True, 1),
        f"{base}/event": (False, 1),
        f"{base}/snapshot": (True, 0),
    }
    assert recorder.wait_for(lambda: recorder.on(f"{base}/snapshot"))
    got = {m.topic: m for m in recorder.messages if m.topic in expected}
    assert {t: got[t].qos for t in expected} == {t: q for t, (_, q) in expected.items()}
    assert got[f"{base}/snapshot"].payload == jpeg
    line = json.loads(got[f"{base}/line/door"].payload)
    assert line == {"in": 4, "out": 1, "ts": result.ts, "run": publisher.run_id}
    # A broker restarted without persistence lost them: the retained ones come back after the
    # reconnect, the event (not retained, already delivered) does not.
    broker.stop()
    assert wait_until(lambda: not publisher.connected)
    seen = len(recorder.messages)
    broker.start()
    assert wait_until(lambda: publisher.connected)
    retained = {t for t, (keep, _) in expected.items() if keep}
    # Subscribe only once they are back (the first recorder resubscribes on reconnect), so
    # the late subscriber gets them as retained messages, not live.
    assert recorder.wait_for(lambda: {m.topic for m in recorder.messages[seen:]} >= retained)
    late = mqtt_recorder(broker, f"{base}/#")
    assert late.wait_for(lambda: {m.topic for m in late.messages} >= retained)
    assert all(m.retain for m in late.messages if m.topic in retained)
    assert not late.on(f"{base}/event")
    assert late.on(f"{base}/snapshot")[0].payload == jpeg


def test_an_unknown_publication_kind_or_level_count_is_a_value_error(
    broker: Broker, make_publisher: Any
) -> None:
    publisher = started(make_publisher, broker)
    with pytest.raises(ValueError, match="takes 2 topic level"):
        publisher.publish("cam1", Publication("zone", ("only-zone",), {"count": 1}))
    with pytest.raises(ValueError, match="unknown publication kind 'bogus'"):
        publisher.publish("cam1", Publication("bogus", (), {}))  # type: ignore[arg-type]


def test_skipped_results_are_published_only_when_asked_and_thermal_is_in_the_status(
    broker: Broker, mqtt_recorder: RecorderFactory, device_id: str
) -> None:
    recorder = mqtt_recorder(broker, "edgesight/#")
    publisher = MqttPublisher(
        make_config(broker), device_id, "0.1.0", MODEL, ["cam1", "door"], publish_skipped={"door"}
    )
    publisher.start()
    try:
        assert wait_until(lambda: publisher.connected)
        for source in ("cam1", "door"):
            skipped = make_result(seq=1, source_id=source)
            skipped.inferred = False
            publisher.emit(skipped, None)
            publisher.emit(make_result(seq=2, source_id=source), None)
        publisher.set_thermal({"factor": 0.5, "temp_c": 82.0, "throttled": False, "reason": "hot"})
        base = f"edgesight/{device_id}"
        assert recorder.wait_for(lambda: len(recorder.on(f"{base}/door/result")) == 2)
        assert recorder.wait_for(lambda: len(recorder.on(f"{base}/cam1/result")) == 1)
        assert [r["inferred"] for r in recorder.json(f"{base}/door/result")] == [False, True]
        assert recorder.json(f"{base}/cam1/result")[0]["seq"] == 2
        assert recorder.wait_for(lambda: "thermal" in recorder.json(f"{base}/status")[-1])
        assert recorder.json(f"{base}/status")[-1]["thermal"]["factor"] == 0.5
        publisher.set_thermal(None)
        assert recorder.wait_for(lambda: "thermal" not in recorder.json(f"{base}/status")[-1])
    finally:
        publisher.close(timeout_s=1.0)
