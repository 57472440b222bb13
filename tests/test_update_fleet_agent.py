"""A real agent in a fleet group reconciles to the signed desired model retained on the broker:
at start (joining), a newer document later, a group rollback; and refuses what TUF says an
updater must refuse: an expired document, one signed by another key, a replayed older one."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.bundle.signing import public_key_base64
from edge_agent.updates.desired import sign_desired
from tests.helpers.agent_run import (
    BASE,
    PREFIX,
    WAIT_S,
    Assets,
    agent_config,
    results,
    running_agent,
    source,
    write_config,
)
from tests.helpers.clips import write_clip
from tests.helpers.mqtt import Broker, Recorder
from tests.helpers.update_server import serving
from tools.bad_models import build, pack

GROUP = "shelf-eu"
DESIRED = f"{PREFIX}/fleet/{GROUP}/desired"
MODEL = f"{BASE}/model"


def publish_retained(broker: Broker, topic: str, doc: dict[str, Any]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish(topic, json.dumps(doc), qos=1, retain=True).wait_for_publish(WAIT_S)
    client.disconnect()
    client.loop_stop()


def doc(key: Ed25519PrivateKey, seq: int, url: str, archive: tuple[Path, str, int], version: int,
        **extra: Any) -> dict[str, Any]:  # fmt: skip
    _, sha, size = archive
    now = int(time.time())
    return sign_desired(key, {"group": GROUP, "seq": seq, "name": "colour-blocks",
                              "version": version, "url": url, "sha256": sha, "size": size,
                              "issued": now, "expires": now + 3600, **extra})  # fmt: skip


def test_a_group_device_reconciles_and_refuses_bad_documents(
    tmp_path: Path, broker: Broker, mqtt_recorder: Callable[..., Recorder]
) -> None:
    key = Ed25519PrivateKey.generate()
    v1 = build("good", tmp_path / "v1", key, version=1)
    v1_archive = pack(v1, tmp_path / "v1.tar.gz")
    v2 = pack(build("good", tmp_path / "v2", key, version=2), tmp_path / "v2.tar.gz")
    v3 = pack(build("good", tmp_path / "v3", key, version=3), tmp_path / "v3.tar.gz")
    assets = Assets(v1, write_clip(tmp_path / "clip.mp4"))
    cfg = agent_config(assets, broker, tmp_path / "state", [source(assets)])
    cfg["model"]["public_keys"] = [public_key_base64(key.public_key())]
    cfg["updates"] = {"allow_http": True, "allow_private_addresses": True, "probation_s": 2,
                      "group": GROUP}  # fmt: skip
    config = write_config(tmp_path / "agent.json", cfg)
    rec = mqtt_recorder(broker, f"{BASE}/#")

    def model() -> dict[str, Any]:
        found = rec.json(MODEL)
        return found[-1] if found else {}

    def becomes(state: str, version: int) -> bool:
        return rec.wait_for(lambda: (model().get("state"), model().get("version")) ==
                            (state, version), WAIT_S * 2)  # fmt: skip

    blobs = {p.name: p.read_bytes() for p, _, _ in (v1_archive, v2, v3)}
    with (
        serving(blobs["v2.tar.gz"]) as s2,
        serving(blobs["v3.tar.gz"]) as s3,
        serving(blobs["v1.tar.gz"]) as s1,
    ):
        # Retained before the device joins: it reconciles at start.
        publish_retained(broker, DESIRED, doc(key, 1, s2.url, v2, 2))
        with running_agent(config):
            assert becomes("active", 2), rec.json(MODEL)
            assert model()["origin"] == f"fleet:{GROUP}" and model()["group"] == GROUP
            # Refused: expired, another key, a replay of seq 1 naming v3. Nothing changes.
            stale = doc(key, 5, s3.url, v3, 3)
            stale["expires"] = int(time.time()) - 10
            publish_retained(broker, DESIRED, sign_desired(key, stale))
            publish_retained(broker, DESIRED, doc(Ed25519PrivateKey.generate(), 6, s3.url, v3, 3))
            publish_retained(broker, DESIRED, doc(key, 1, s3.url, v3, 3))
            time.sleep(2.0)
            assert (model()["state"], model()["version"]) == ("active", 2)
            assert s3.requests == 0, "a refused document downloads nothing"
            # A newer document: v3.
            publish_retained(broker, DESIRED, doc(key, 7, s3.url, v3, 3))
            assert becomes("active", 3), rec.json(MODEL)
            # The rollout tool takes the group back: a lower version, allowed by rollback.
            publish_retained(broker, DESIRED, doc(key, 8, s1.url, v1_archive, 1, rollback=True))
            assert becomes("active", 1), rec.json(MODEL)
            n = len(results(rec))
            assert rec.wait_for(lambda: len(results(rec)) >= n + 5, WAIT_S)
    assert results(rec)[-1]["model"].endswith("@1")
