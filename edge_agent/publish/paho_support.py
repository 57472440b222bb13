"""paho glue: reason and return codes in words (with advice where the user can act), a probe
that says why a TCP connection fails (paho reports only that it did), and the guard every
paho callback is wrapped in."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config import TlsConfig

log = logging.getLogger("edge_agent.publish.client")

#: How long the probe that explains a failed connection waits for TCP, s.
PROBE_TIMEOUT_S = 2.0
#: MQTT 5 reason codes that call for the user's action, with the advice the log gives.
ADVICE = {
    134: "check mqtt.username and mqtt.password",
    135: "mosquitto answers a wrong password with this too: check mqtt.username and "
    "mqtt.password, then the broker's ACL",
    133: "the broker refuses the client id; set mqtt.client_id",
    138: "the broker has banned this client",
    142: "another client connected with the same client id: is a second agent running with "
    "this device_id?",
}


def describe_code(code: ReasonCode | MQTTErrorCode | int) -> str:
    """The one place where paho reason and return codes become text for logs and errors."""
    if isinstance(code, ReasonCode):
        return f"{code.getName()} (reason code {code.value})"
    try:
        err = MQTTErrorCode(code)
    except ValueError:
        return f"unknown paho code {code!r}"
    return f"{mqtt.error_string(err).rstrip('.')} ({err.name})"


def guarded(name: str, func: Callable[..., None]) -> Callable[..., None]:
    """Wrap a paho callback so an exception in it is logged and swallowed.

    paho re-raises callback exceptions unless ``suppress_exceptions`` is set, which ends the
    network thread: no more reconnects, no more publishing, and nothing says so.
    """

    def callback(*args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except Exception:
            log.exception("error in MQTT %s callback (ignored, the network thread goes on)", name)

    callback.__name__ = f"guarded_{name}"
    return callback


def explain(code: ReasonCode) -> str:
    """A reason code in words, with advice where the user can act on it."""
    text = describe_code(code)
    advice = ADVICE.get(code.value)
    return f"{text}; {advice}" if advice else text


def probe(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """Why a connection to ``host:port`` fails, in words, by trying one TCP connection (paho
    reports only that it failed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except socket.gaierror as exc:
        return f"cannot resolve host name {host!r} ({exc.strerror})"
    except ConnectionRefusedError:
        return "connection refused: nothing listens on that port"
    except TimeoutError:
        return f"no answer within {timeout_s:g} s (host down, or a firewall drops the packets)"
    except OSError as exc:
        return exc.strerror or str(exc)
    return "TCP connects, but the MQTT (or TLS) handshake failed; is this an MQTT port?"


#: The plain-TCP MQTT port; TLS on it is almost always a configuration mistake (TLS uses 8883).
PLAIN_MQTT_PORT = 1883


def configure_tls(client: mqtt.Client, tls: TlsConfig, port: int) -> None:
    """``mqtt.tls`` on a paho client; unreadable certificate files are a ValueError naming
    the key (a caller mistake, raised at start)."""
    try:
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
        )
    except (OSError, ssl.SSLError) as exc:  # a missing or malformed file
        raise ValueError(f"mqtt.tls: cannot load the certificate files: {exc}") from exc
    client.tls_insecure_set(tls.insecure)
    if port == PLAIN_MQTT_PORT:
        log.warning(
            "mqtt.tls is set but mqtt.port is %d, the plain MQTT port; TLS is usually 8883",
            PLAIN_MQTT_PORT,
        )


def wait_for_ack(info: mqtt.MQTTMessageInfo, what: str, timeout_s: float, where: str) -> None:
    """Wait up to ``timeout_s`` for the broker at ``where`` to acknowledge ``what``; say so in
    the log if it does not (the final message of close())."""
    try:
        info.wait_for_publish(timeout=timeout_s)
        acked = info.is_published()
    except (ValueError, RuntimeError) as exc:
        log.warning("could not publish %s: %s", what, exc)
        acked = False
    if not acked:
        log.warning("broker %s did not acknowledge %s within %.1f s", where, what, timeout_s)
