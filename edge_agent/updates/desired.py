"""The fleet's desired model: one signed, retained message per group that devices reconcile to.

``<prefix>/fleet/<group>/desired`` holds a JSON document naming the bundle every device of the
group should run. It is signed (ed25519 over the canonical JSON of every other field, the same
form as signed commands) so that anyone who can publish on the broker cannot install a model,
and it carries what TUF asks of update metadata:

- ``seq`` grows with every document for the group: a device refuses one not newer than the
  last it accepted (an attacker replaying an old, validly signed document: rollback);
- ``expires``: a device refuses an expired document, so a frozen mirror or a stale retained
  message cannot hold a device on an old model forever (indefinite freeze);
- ``size`` and ``sha256`` pin the bundle archive's bytes (endless data, mix-and-match);
- ``version`` is the bundle's; devices refuse a bundle whose version is not higher than every
  version they accepted before, unless the document says ``rollback: true``, which only a
  rollout tool holding the key writes to take a group back to the model it ran before.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.bundle.signing import fingerprint
from edge_agent.publish.command_auth import canonical

SCHEMA = "edgesight.desired/1"
#: A desired document is a few hundred bytes; refuse to parse a large retained message.
MAX_DOCUMENT_BYTES = 16 * 1024
SHA256_HEX = r"^[0-9a-f]{64}$"


class DesiredError(ValueError):
    """A desired-state document a device must not act on; the message says why."""


class Desired(BaseModel):
    """A verified desired-state document (what ``verify_desired`` returns)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    schema_: str = Field(alias="schema", pattern=f"^{SCHEMA}$")
    group: str = Field(min_length=1, max_length=64)
    seq: int = Field(ge=1, description="Higher than every earlier document for the group.")
    name: str = Field(min_length=1, max_length=128, description="The bundle's model name.")
    version: int = Field(ge=0, description="The bundle's manifest version.")
    url: str = Field(min_length=1, max_length=2048, description="Where the archive is.")
    sha256: str = Field(pattern=SHA256_HEX, description="The archive's sha256, hex.")
    size: int = Field(gt=0, description="The archive's size in bytes.")
    issued: int = Field(ge=0, description="Unix time, s, when it was signed.")
    expires: int = Field(ge=0, description="Unix time, s, after which devices refuse it.")
    rollback: bool = Field(
        False, description="Allow a version not higher than accepted ones (a group rollback)."
    )
    key: str = Field("", description="Fingerprint of the key that signed it (set on verify).")


def sign_desired(key: Ed25519PrivateKey, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The document as published: `fields` (without schema) plus schema and signature."""
    body = {"schema": SCHEMA, **{k: v for k, v in fields.items() if k not in ("sig", "key")}}
    sig = base64.b64encode(key.sign(canonical(body))).decode("ascii")
    return body | {"sig": sig}


def verify_desired(
    raw: bytes,
    public_keys: Sequence[Ed25519PublicKey],
    *,
    now: float | None = None,
) -> Desired:
    """Parse and check a retained desired message; DesiredError naming the problem."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise DesiredError(f"desired document is {len(raw)} bytes (at most {MAX_DOCUMENT_BYTES})")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DesiredError(f"desired document is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DesiredError("desired document must be a JSON object")
    sig = data.pop("sig", None)
    if not isinstance(sig, str) or not sig:
        raise DesiredError("desired document is not signed (no 'sig')")
    if not public_keys:
        raise DesiredError("no public keys configured to check desired documents against")
    try:
        signature = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise DesiredError("desired document's 'sig' is not base64") from None
    signed_by = None
    for key in public_keys:
        try:
            key.verify(signature, canonical(data))
        except InvalidSignature:
            continue
        signed_by = fingerprint(key)
        break
    if signed_by is None:
        raise DesiredError("desired document's signature matches none of the configured keys")
    try:
        doc = Desired.model_validate(data | {"key": signed_by})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise DesiredError(f"desired document: {problems}") from None
    if doc.expires <= (time.time() if now is None else now):
        raise DesiredError(f"desired document seq {doc.seq} expired at {doc.expires}")
    return doc
