"""The broker answers a CONNECT made as the agent makes it (protocol, TLS, user and password),
and says why not in the client's own words (paho_support.py)."""

from __future__ import annotations

import ssl
import time
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config import AgentConfig, ConfigIssue, MqttConfig
from edge_agent.doctor.checks import Check
from edge_agent.publish.paho_support import ADVICE, describe_code, probe

#: Our client id gets this suffix: the agent's own id would take over (and end) the session of
#: an agent that is running, and a clean session leaves nothing behind on the broker.
CLIENT_ID_SUFFIX = "-doctor"
#: Same default as publisher.py's CLIENT_ID_PREFIX (not imported: that loads the publisher).
CLIENT_ID_PREFIX = "edgesight-"
#: How long one network loop waits for the CONNACK, s.
LOOP_S = 0.1
REFUSED_ADVICE = (
    "start the broker (systemctl status mosquitto) or fix mqtt.host and mqtt.port; a firewall "
    "may drop the port"
)
NAME_ADVICE = (
    "fix mqtt.host: this device cannot resolve it (check the name, the DNS server, or give "
    "the broker's address)"
)
TLS_ADVICE = (
    "check mqtt.tls.ca_file (the CA that signed the broker's certificate), that mqtt.host is a "
    "name in that certificate, the client certificate and key for mutual TLS, and that mqtt.port "
    "is the broker's TLS port (usually 8883)"
)
SILENT_ADVICE = (
    "the port accepted TCP but sent no CONNACK: is it an MQTT port, and is TLS set the same "
    "way on both sides (mqtt.tls against a plain port, or no mqtt.tls against a TLS port)?"
)


def _describe(mq: MqttConfig) -> str:
    tls = "TLS" if mq.tls else "plain TCP"
    auth = f"user {mq.username!r}" if mq.username else "anonymous"
    return f"{mq.host}:{mq.port} (MQTT {mq.protocol}, {tls}, {auth})"


def _client(cfg: AgentConfig) -> mqtt.Client:
    mq = cfg.mqtt
    client_id = (mq.client_id or f"{CLIENT_ID_PREFIX}{cfg.device_id}") + CLIENT_ID_SUFFIX
    v5 = mq.protocol == "5"
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else True,
    )
    if mq.username:
        client.username_pw_set(mq.username, mq.password)
    if mq.tls is not None:
        client.tls_set(
            ca_certs=str(mq.tls.ca_file) if mq.tls.ca_file else None,
            certfile=str(mq.tls.cert_file) if mq.tls.cert_file else None,
            keyfile=str(mq.tls.key_file) if mq.tls.key_file else None,
        )
        client.tls_insecure_set(mq.tls.insecure)
    return client


def check_broker(cfg: AgentConfig, timeout_s: float, missing: Sequence[ConfigIssue] = ()) -> Check:
    """Connect, wait up to ``timeout_s`` for the CONNACK, disconnect; the reason in words.
    ``missing``: TLS files the config names that are not there (config/files.py)."""
    mq = cfg.mqtt
    where = _describe(mq)
    if missing:
        found = f"{where}: " + "; ".join(str(i) for i in missing)
        return Check("broker", "fail", found, TLS_ADVICE)
    try:
        client = _client(cfg)
    except (OSError, ssl.SSLError, ValueError) as exc:
        return Check("broker", "fail", f"{where}: cannot load the TLS files: {exc}", TLS_ADVICE)
    answer: list[ReasonCode] = []
    dropped: list[str] = []

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, code: ReasonCode, _p: Any) -> None:
        answer.append(code)

    def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, code: ReasonCode, _p: Any) -> None:
        dropped.append(str(code))

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.connect_timeout = timeout_s
    started = time.monotonic()
    try:
        client.connect(mq.host, mq.port, keepalive=mq.keepalive_s)
    except (ssl.SSLError, ssl.CertificateError) as exc:
        return Check("broker", "fail", f"{where}: TLS handshake failed: {exc}", TLS_ADVICE)
    except OSError:
        reason = probe(mq.host, mq.port, timeout_s)
        advice = NAME_ADVICE if reason.startswith("cannot resolve") else REFUSED_ADVICE
        return Check("broker", "fail", f"{where}: {reason}", advice)
    try:
        while not answer and not dropped and time.monotonic() - started < timeout_s:
            client.loop(timeout=LOOP_S)
    finally:
        client.disconnect()  # a clean DISCONNECT: the broker publishes no will, keeps nothing
        client.loop(timeout=LOOP_S)
    took_ms = (time.monotonic() - started) * 1000
    if answer and not answer[0].is_failure:
        return Check("broker", "ok", f"{where}: connected in {took_ms:.0f} ms")
    if answer:
        code = answer[0]
        found = f"{where}: the broker refused the connection: {describe_code(code)}"
        advice = ADVICE.get(code.value, "the broker's log says why it refused this client")
        return Check("broker", "fail", found, advice)
    if dropped:
        found = f"{where}: the broker closed the connection before answering ({dropped[0]})"
        return Check("broker", "fail", found, SILENT_ADVICE)
    return Check("broker", "fail", f"{where}: no CONNACK within {timeout_s:g} s", SILENT_ADVICE)
