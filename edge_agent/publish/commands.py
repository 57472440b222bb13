"""Commands sent to a device on ``<prefix>/<device>/cmd/<name>``: parse, check, dispatch, reply.

Pure (no paho, no broker): the MQTT callback turns a message into an :class:`Incoming`, and
:meth:`CommandRouter.handle` answers with the :class:`Reply` to publish, or None. It never
raises: a command payload comes from the network, and one bad message must not stop the MQTT
network thread (STYLE 7). Every refusal is an error reply with a ``code`` a program can test and
an ``error`` a person can read. docs/commands.md documents the contract for users.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from edge_agent.publish.command_args import COMMAND_ARGS, _Args
from edge_agent.publish.command_args import NoArgs as NoArgs  # re-exported: callers' import
from edge_agent.publish.command_args import SetThresholdArgs as SetThresholdArgs
from edge_agent.publish.command_args import SnapshotArgs as SnapshotArgs
from edge_agent.publish.command_args import UpdateModelArgs as UpdateModelArgs
from edge_agent.publish.topics import Topics, topic_level

if TYPE_CHECKING:
    from edge_agent.publish.command_auth import CommandAuth, Verified

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

#: Largest payload parsed, bytes. The real commands are under 1 KB; 16 KB leaves room for a
#: signed envelope and bounds the work a hostile message can cause.
DEFAULT_MAX_BYTES = 16384
#: A request id is echoed in the reply; longer ones are refused rather than echoed.
MAX_REQUEST_ID_CHARS = 128
#: Characters of a refused value quoted back in an error message.
MAX_QUOTED_CHARS = 40
#: Validation problems listed in one error message before the rest are counted.
MAX_LISTED_PROBLEMS = 5


class CommandRefused(Exception):
    """The request cannot be done; ``str(exc)`` goes to the requester in the error reply.

    Handlers raise it for a refusal the requester can act on (an unknown label, a source
    that is not running): it is answered with ``code`` and logged without a traceback.
    """

    def __init__(self, message: str, code: str = "refused") -> None:
        super().__init__(message)
        self.code = code


#: Takes the command's arguments model, returns the reply's ``result`` (a JSON-able mapping).
Handler = Callable[[Any], Mapping[str, Any]]


@dataclass(frozen=True)
class Incoming:
    """One command message as the MQTT callback received it."""

    name: str  # the topic level after cmd/
    payload: bytes
    retained: bool
    response_topic: str | None  # MQTT 5 property, else None
    correlation: bytes | None  # MQTT 5 correlation data
    received: float  # time.time() at receipt
    expiry_s: float | None  # MQTT 5 message expiry interval left at receipt, if any


@dataclass(frozen=True)
class Reply:
    """What to publish (QoS 1, not retained), with the correlation data to send back."""

    topic: str
    payload: bytes
    correlation: bytes | None


def _quote(value: Any) -> str:
    """A refused value, short, as JSON, with its JSON type."""
    kind = {bool: "boolean", int: "number", float: "number", str: "string", list: "array"}
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > MAX_QUOTED_CHARS:
        text = text[:MAX_QUOTED_CHARS] + "..."
    name = "null" if value is None else kind.get(type(value), "object")
    return f"{text} (a JSON {name})" if value is not None else "null"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise CommandRefused(f"duplicate key {key[:MAX_QUOTED_CHARS]!r} in a JSON object; "
                                 "each key may appear once", "duplicate_key")  # fmt: skip
        out[key] = value
    return out


def _no_constant(text: str) -> float:
    raise CommandRefused(f"{text} is not a JSON number; send a finite number", "not_finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise CommandRefused(f"{text[:MAX_QUOTED_CHARS]} is too large for a number", "not_finite")
    return value


def parse_payload(payload: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """The payload's JSON object (an empty payload is ``{}``); CommandRefused says why not."""
    if len(payload) > max_bytes:
        raise CommandRefused(
            f"payload is {len(payload)} bytes; a command takes at most {max_bytes}", "too_large"
        )
    if not payload:
        return {}
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandRefused(
            f"payload is not UTF-8: byte 0x{payload[exc.start]:02x} at offset {exc.start}; "
            "send UTF-8 JSON",
            "not_utf8",
        ) from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # lone surrogates from \ud800
    except CommandRefused:
        raise
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise CommandRefused(
            f"payload is not valid JSON: {exc.msg} at {where}", "bad_json"
        ) from None
    except UnicodeEncodeError:
        raise CommandRefused(
            "payload is not valid JSON text: it escapes a lone UTF-16 surrogate", "bad_json"
        ) from None
    except RecursionError:
        raise CommandRefused(
            "payload is not valid JSON here: nested too deeply", "bad_json"
        ) from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise CommandRefused(f"payload is not valid JSON here: {exc}", "bad_json") from None
    if not isinstance(value, dict):
        raise CommandRefused(
            f'payload must be a JSON object such as {{"id": "r1"}}, but got {_quote(value)}',
            "not_object",
        )
    return value


def request_id(request: Mapping[str, Any]) -> str | None:
    """The request's ``id`` (echoed in the reply), None when absent; CommandRefused if unusable."""
    value = request.get("id")
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_REQUEST_ID_CHARS:
        raise CommandRefused(
            f"'id' must be a string of 1 to {MAX_REQUEST_ID_CHARS} characters, "
            f"but got {_quote(value)}",
            "bad_request",
        )
    return value


def _takes(name: str, model: type[BaseModel], noun: str) -> str:
    fields = [f"{f} (required)" if info.is_required() else f
              for f, info in model.model_fields.items()]  # fmt: skip
    return f"{name} takes " + (", ".join(fields) if fields else f"no {noun}s")


def validate_model(
    name: str,
    model: type[M],
    data: Mapping[str, Any],
    noun: str = "argument",
    code: str = "bad_args",
) -> M:
    """``data`` as ``model``; CommandRefused naming each bad field, expected versus got."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            field = ".".join(str(part) for part in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown {noun} {field!r}")
            elif err["type"] == "missing":
                problems.append(f"missing {noun} {field!r}")
            else:
                msg = err["msg"].removeprefix("Value error, ")
                problems.append(f"{noun} {field!r}: {msg}, got {_quote(err['input'])}")
        more = len(problems) - MAX_LISTED_PROBLEMS
        text = "; ".join(problems[:MAX_LISTED_PROBLEMS]) + (
            f"; and {more} more" if more > 0 else ""
        )
        raise CommandRefused(f"{text} ({_takes(name, model, noun)})", code) from None


class CommandRouter:
    """Answers command messages for one device with the handlers the agent supplies.

    Retained commands and commands whose MQTT message expiry has passed are ignored (None): a
    retained command would run again at every reconnect, and an expired one has nobody waiting
    for it (the MQTT 5 broker drops such messages itself; this covers time spent in a queue).
    """

    def __init__(
        self,
        topics_prefix: str,
        device_id: str,
        handlers: Mapping[str, Handler],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        auth: CommandAuth | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        unknown = sorted(set(handlers) - set(COMMAND_ARGS))
        if unknown:
            raise ValueError(
                f"handlers for unknown commands {unknown}; expected some of {sorted(COMMAND_ARGS)}"
            )
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, but got {max_bytes}")
        self._topics = Topics(topics_prefix, device_id)
        self._handlers = dict(handlers)
        self._max_bytes = max_bytes
        self._auth = auth
        self._clock = clock
        self.counts: dict[str, int] = {}  # "ok", "ignored_retained", "ignored_expired", codes

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def handle(self, msg: Incoming) -> Reply | None:
        """The reply to publish for ``msg``, or None when it is ignored. Never raises."""
        if msg.retained:
            self._count("ignored_retained")
            return None
        try:
            now = self._clock()
            if msg.expiry_s is not None and (
                msg.expiry_s <= 0 or now > msg.received + msg.expiry_s
            ):
                self._count("ignored_expired")
                return None
            return self._answer(msg)
        except Exception:  # a bug here must still not stop the network thread
            log.exception("command %r: unexpected error while answering", msg.name[:64])
            self._count("failed")
            body = {"ok": False, "command": topic_level(msg.name), "code": "failed",
                    "error": "internal error; the device log has details"}  # fmt: skip
            topic = self._topics.cmd_reply(msg.name)  # pure: cannot fail as the rest did
            return Reply(topic, _encode(body), msg.correlation)

    def _answer(self, msg: Incoming) -> Reply:
        rid: str | None = None
        try:
            request = parse_payload(msg.payload, self._max_bytes)
            rid = request_id(request)
            model = COMMAND_ARGS.get(msg.name) if msg.name in self._handlers else None
            if model is None:
                raise CommandRefused(
                    f"unknown command {topic_level(msg.name)[:64]!r}; this device knows "
                    + ", ".join(sorted(self._handlers)),
                    "unknown_command",
                )
            args, verified = self._arguments(msg.name, request)
            validated = validate_model(msg.name, model, args)
            if self._auth is not None and verified is not None:
                self._auth.accept(verified)  # the sequence is on disk before the command runs
            result = self._run(msg.name, validated)
        except CommandRefused as exc:
            self._count(exc.code)
            log.info("command %r refused (%s): %s", msg.name[:64], exc.code, exc)
            return self._reply(msg, rid, {"ok": False, "code": exc.code, "error": str(exc)})
        self._count("ok")
        return self._reply(msg, rid, {"ok": True, "result": result})

    def _arguments(
        self, name: str, request: dict[str, Any]
    ) -> tuple[Mapping[str, Any], Verified | None]:
        """The arguments: the request without ``id``, or a signed envelope's checked ``args``."""
        if self._auth is not None:
            if "sig" not in request:
                raise CommandRefused(
                    "this device accepts only signed commands; send the signed envelope "
                    "(device, command, seq, expires, args, sig)",
                    "unsigned",
                )
            verified = self._auth.check(name, request)
            return verified.args, verified
        if "sig" in request:
            raise CommandRefused(
                "this device has no command keys configured; send the arguments unsigned",
                "bad_request",
            )
        return {k: v for k, v in request.items() if k != "id"}, None

    def _run(self, name: str, args: _Args) -> dict[str, Any]:
        try:
            result = self._handlers[name](args)
        except CommandRefused:
            raise
        except Exception as exc:
            log.exception("command %r: the handler raised", name)
            raise CommandRefused(
                f"{name} failed ({type(exc).__name__}); the device log has details", "failed"
            ) from exc
        if not isinstance(result, Mapping):
            log.error("command %r: handler returned %s, not a mapping", name, type(result))
            raise CommandRefused(f"{name} failed: its result is not a JSON object", "failed")
        try:
            _encode({"result": result})
        except (TypeError, ValueError, RecursionError) as exc:
            log.error("command %r: result is not JSON: %s", name, exc)
            raise CommandRefused(f"{name} failed: its result is not JSON", "failed") from exc
        return dict(result)

    def _reply(self, msg: Incoming, rid: str | None, body: dict[str, Any]) -> Reply:
        known = msg.name in COMMAND_ARGS
        envelope = {"ok": body.pop("ok"), "command": msg.name if known else topic_level(msg.name)}
        envelope |= body
        envelope["ts"] = round(self._clock(), 3)
        if rid is not None:
            envelope["id"] = rid
        return Reply(self._reply_topic(msg), _encode(envelope), msg.correlation)

    def _reply_topic(self, msg: Incoming) -> str:
        """The MQTT 5 response topic when usable, else ``<prefix>/<device>/cmd/<name>/reply``.

        A response topic on this device's own command topics is not used: the reply would come
        back as a command.
        """
        own = self._topics.cmd_filter().removesuffix("+")
        topic = msg.response_topic
        if (
            topic
            and not any(ch in topic for ch in "+#\0")
            and len(topic.encode("utf-8", "replace")) <= 65535
        ):
            rest = topic.removeprefix(own)
            if rest == topic or "/" in rest:
                return topic
        return self._topics.cmd_reply(msg.name)


def _encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
