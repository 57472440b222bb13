"""Signed commands: an ed25519 signature over the device, command, sequence number and expiry.

Whoever can publish to the broker can send commands; with keys configured only the holder of a
private key can. The signature covers the canonical JSON of every envelope field but ``sig``
(sorted keys, no spaces, UTF-8), so a command signed for one device, command name or moment is
refused anywhere else. ``seq`` must rise: the last accepted one is written to a state file
(fsutil.write_atomic) *before* the command runs, so neither a replay nor a restart can run one
twice. docs/commands.md documents the envelope and the recovery from a damaged state file.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.bundle.signing import SIGNATURE_BYTES, PublicKeySource, fingerprint, load_public_key
from edge_agent.fsutil import move_aside, write_atomic
from edge_agent.publish.commands import CommandRefused, validate_model

log = logging.getLogger(__name__)

STATE_SCHEMA = "edgesight.command-seq/1"
#: A state file holds one small JSON object; a larger file is damaged, not read whole.
MAX_STATE_BYTES = 4096


class SignedEnvelope(BaseModel):
    """A signed command as sent: ``sig`` covers every other field."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    device: str = Field(description="Device id the command is for.")
    command: str = Field(description="Command name, the topic level after cmd/.")
    seq: int = Field(ge=1, description="Higher than every earlier command to this device.")
    expires: int = Field(ge=0, description="Unix time, s, after which the device refuses it.")
    args: dict[str, Any] = Field(default_factory=dict, description="The command's arguments.")
    id: str | None = Field(None, description="Request id, echoed in the reply.")
    sig: str = Field(description="base64 ed25519 signature over the canonical other fields.")


def canonical(fields: Mapping[str, Any]) -> bytes:
    """The signed bytes: JSON with sorted keys, no spaces, UTF-8 (not ASCII-escaped)."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)  # fmt: skip
    return text.encode("utf-8")


def sign_command(
    key: Ed25519PrivateKey,
    *,
    device: str,
    command: str,
    seq: int,
    expires: int,
    args: Mapping[str, Any] | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """A signed envelope, ready to send as JSON (for tools and tests; devices only verify)."""
    fields: dict[str, Any] = {"device": device, "command": command, "seq": seq,
                              "expires": expires, "args": dict(args or {})}  # fmt: skip
    if request_id is not None:
        fields["id"] = request_id
    return fields | {"sig": base64.b64encode(key.sign(canonical(fields))).decode("ascii")}


@dataclass(frozen=True)
class Verified:
    """A signed command that passed every check but the final sequence record."""

    command: str
    seq: int
    args: dict[str, Any]
    key: str  # fingerprint of the key that signed it


class CommandAuth:
    """Checks signed commands for one device and keeps the last accepted ``seq`` on disk.

    The state file is read on first use (or ``load()``). Absent, with no damaged copy beside
    it: a new device, starting from 0. Unreadable JSON or a wrong ``last_seq``: it is moved
    aside and signed commands are refused, not restarted from 0, because from 0 every
    captured command that has not expired could be replayed. The refusal holds across
    restarts (a ``<name>.damaged-*`` copy beside a missing state file keeps it) until an
    operator writes a state file with ``last_seq`` at least the last one used, or removes the
    damaged copies to start from 0. The file is looked at again on each signed command while
    refusing, so no restart is needed.
    """

    def __init__(
        self,
        device_id: str,
        public_keys: Sequence[PublicKeySource],
        state_file: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        keys = [load_public_key(k) for k in public_keys]
        if not keys:
            raise ValueError("CommandAuth needs at least one public key to verify commands")
        self.device_id = device_id
        self._keys = [(fingerprint(k), k) for k in keys]
        self.state_file = Path(state_file)
        self._clock = clock
        self._lock = threading.Lock()
        self._last_seq: int | None = None  # None until loaded, or while refusing
        self._refusing: str | None = None

    @property
    def last_seq(self) -> int | None:
        """The last accepted sequence number; None before loading or while refusing."""
        return self._last_seq

    @property
    def refusing(self) -> str | None:
        """Why signed commands are refused (damaged or unreadable state), else None."""
        return self._refusing

    def load(self) -> None:
        """Read the state file; sets ``last_seq`` or ``refusing`` and logs which."""
        path = self.state_file
        try:
            data = path.read_bytes() if path.stat().st_size <= MAX_STATE_BYTES else None
        except FileNotFoundError:
            damaged = sorted(path.parent.glob(f"{path.name}.damaged-*"))
            if damaged:
                self._refuse(f"{path} is missing and a damaged copy lies beside it "
                             f"({damaged[-1].name})")  # fmt: skip
            else:
                self._accept_state(0)
            return
        except OSError as exc:
            self._refuse(f"cannot read {path}: {exc.strerror}")
            return
        problem, seq = _parse_state(data)
        if problem is None:
            self._accept_state(seq)
            return
        try:
            aside = move_aside(path)
        except OSError as exc:
            self._refuse(f"{path} is damaged ({problem}) and cannot be moved aside: {exc}")
            return
        self._refuse(f"{path} was damaged ({problem}) and was moved aside to {aside.name}")

    def _accept_state(self, seq: int) -> None:
        if self._refusing is not None:
            log.warning(
                "signed commands accepted again: %s holds last_seq %d", self.state_file, seq
            )
        self._last_seq, self._refusing = seq, None

    def _refuse(self, why: str) -> None:
        if self._refusing != why:
            log.error("signed commands refused: %s; write %s as {\"last_seq\": N} with N the last "
                      "sequence number used, or remove the damaged copy to start from 0",
                      why, self.state_file)  # fmt: skip
        self._last_seq, self._refusing = None, why

    def check(self, command: str, envelope: Mapping[str, Any]) -> Verified:
        """Verify signature, device, command, expiry and sequence; CommandRefused says which."""
        if self._last_seq is None:
            self.load()
        if self._refusing is not None:
            raise CommandRefused(
                f"signed commands are refused: {self._refusing}; see docs/commands.md",
                "auth_unavailable",
            )
        env = validate_model("signed envelope", SignedEnvelope, envelope, "field", "bad_envelope")
        key = self._verify_signature(env.sig, {k: v for k, v in envelope.items() if k != "sig"})
        if env.device != self.device_id:
            raise CommandRefused(
                f"signed for device {env.device[:64]!r}, but this is {self.device_id!r}",
                "wrong_device",
            )
        if env.command != command:
            raise CommandRefused(
                f"signed for command {env.command[:64]!r}, but sent to cmd/{command[:64]}",
                "wrong_command",
            )
        now = self._clock()
        if env.expires <= now:
            raise CommandRefused(
                f"expired at {env.expires}, {now - env.expires:.0f} s ago by this device's "
                f"clock ({now:.0f}); sign it again with a later 'expires'",
                "expired",
            )
        last = self._last_seq or 0
        if env.seq <= last:
            raise CommandRefused(
                f"seq {env.seq} is not above the last accepted {last} (a replay, or an older "
                "command); sign it again with a higher 'seq'",
                "replayed",
            )
        return Verified(command, env.seq, dict(env.args), key)

    def _verify_signature(self, sig: str, fields: Mapping[str, Any]) -> str:
        try:
            signature = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError):
            signature = b""
        if len(signature) != SIGNATURE_BYTES:
            raise CommandRefused(
                f"'sig' must be base64 of a {SIGNATURE_BYTES}-byte ed25519 signature",
                "bad_signature",
            )
        message = canonical(fields)
        for fp, key in self._keys:
            try:
                key.verify(signature, message)
            except InvalidSignature:
                continue
            return fp
        raise CommandRefused(
            "the signature does not verify against the configured key(s) "
            f"{', '.join(fp for fp, _ in self._keys)} (another key signed it, or a field "
            "changed after signing)",
            "bad_signature",
        )

    def accept(self, verified: Verified) -> None:
        """Record ``verified.seq`` on disk; only then may the command run."""
        with self._lock:
            last = self._last_seq
            if last is None or verified.seq <= last:
                raise CommandRefused(
                    f"seq {verified.seq} is not above the last accepted {last}", "replayed"
                )
            state = {"schema": STATE_SCHEMA, "device": self.device_id, "last_seq": verified.seq,
                     "command": verified.command, "key": verified.key,
                     "ts": round(self._clock(), 3)}  # fmt: skip
            try:
                write_atomic(self.state_file, canonical(state) + b"\n")
            except OSError as exc:
                log.error("cannot record command seq in %s: %s", self.state_file, exc)
                raise CommandRefused(
                    f"the device cannot record the sequence number ({exc.strerror}), so the "
                    "command was not run",
                    "auth_unavailable",
                ) from exc
            self._last_seq = verified.seq


def _parse_state(data: bytes | None) -> tuple[str | None, int]:
    """(None, last_seq) for a good state file, else (what is wrong, 0)."""
    if data is None:
        return f"larger than {MAX_STATE_BYTES} bytes", 0
    try:
        state = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "not UTF-8 JSON", 0
    seq = state.get("last_seq") if isinstance(state, dict) else None
    if type(seq) is not int or seq < 0:
        return "expected a JSON object with 'last_seq', an integer >= 0", 0
    return None, seq
