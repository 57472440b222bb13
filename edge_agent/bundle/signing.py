"""ed25519 signatures over a bundle's manifest.json: keys, signing and verification.

One signature over the exact bytes of manifest.json covers the whole bundle, because the manifest
pins every other file's sha256 (docs/bundle.md). With keys configured the agent checks,
in order: the signature over the raw manifest bytes (before parsing them), that the bundle holds
no file the manifest does not list, then each listed file's sha256 (``bundle.verify_files``).
Only ``cryptography`` is used here, so this runs on the device.

``manifest.sig`` is the 64-byte signature as one line of standard base64 plus a newline: text,
so it survives copy-paste, email and ``git diff``, and it is unambiguous to parse.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_agent.bundle.manifest import MANIFEST
from edge_agent.bundle.rawkey import PUBLIC_KEY_BYTES, RAW_KEY_BASE64_CHARS, decode_raw_key
from edge_agent.fsutil import write_atomic

SIGNATURE = "manifest.sig"
SIGNATURE_BYTES = 64  # an ed25519 signature (RFC 8032, 5.1.6)
FINGERPRINT_HEX_CHARS = 16  # 64 bits of sha256: tells a fleet's few keys apart in messages
MAX_SIGNATURE_FILE_BYTES = 1024  # the real file is 89 bytes; never read a large file whole
MAX_KEY_FILE_BYTES = 64 * 1024  # a PEM ed25519 key is ~120 bytes; refuse to slurp a wrong file
MAX_NAMED_IN_ERROR = 20  # offending files named in one message before "... and N more"
SIGNATURE_FILE_MODE = 0o644

#: Anything ``load_public_key`` accepts: a key, PEM text/bytes, the base64 raw form, or a path.
PublicKeySource = Ed25519PublicKey | str | bytes | os.PathLike[str]


class KeyFormatError(ValueError):
    """A key file or key string is not what was expected; the message names it."""


class SignatureError(ValueError):
    """The bundle's signature is missing, malformed or wrong, or it holds unsigned files."""


def generate_keypair() -> tuple[bytes, bytes]:
    """A new key as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM), unencrypted."""
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def raw_public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey) -> str:
    """First 16 hex characters of sha256 over the raw 32 public key bytes."""
    return hashlib.sha256(raw_public_bytes(key)).hexdigest()[:FINGERPRINT_HEX_CHARS]


def public_key_base64(key: Ed25519PublicKey) -> str:
    """The one-line form of a public key, convenient in YAML config."""
    return base64.b64encode(raw_public_bytes(key)).decode("ascii")


def _read_key_file(path: Path, what: str) -> bytes:
    expected = f"expected an ed25519 {what} key in PEM"
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise KeyFormatError(f"{path}: not a regular file ({expected})")
        if size > MAX_KEY_FILE_BYTES:
            raise KeyFormatError(f"{path}: {size} bytes is far too large for a key ({expected})")
        return path.read_bytes()
    except OSError as exc:
        raise KeyFormatError(f"{path}: cannot read key file: {exc.strerror} ({expected})") from exc


def _public_from_bytes(data: bytes, where: str) -> Ed25519PublicKey:
    data = data.strip()
    if not data.startswith(b"-----BEGIN"):
        raw = decode_raw_key(data)  # a .pub file may hold the one-line form too
        if raw is not None:
            return Ed25519PublicKey.from_public_bytes(raw)
        raise KeyFormatError(
            f"{where}: not an ed25519 public key: expected PEM ('-----BEGIN PUBLIC KEY-----') "
            f"or one line of base64 of the raw {PUBLIC_KEY_BYTES}-byte key"
        )
    if b"PRIVATE KEY" in data.split(b"\n", 1)[0]:
        raise KeyFormatError(
            f"{where}: is a private key; expected an ed25519 public key (edgesight.pub). "
            "The private key must never be on a device"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFormatError(f"{where}: not an ed25519 public key in PEM: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        kind = type(key).__name__.removeprefix("_").removesuffix("PublicKey") or "other"
        raise KeyFormatError(f"{where}: holds a {kind} key, expected an ed25519 public key in PEM")
    return key


def _exists(path: str) -> bool:
    try:
        return Path(path).exists()
    except (OSError, ValueError):  # a NUL byte, a name too long: not a usable path either
        return False


def load_public_key(source: PublicKeySource) -> Ed25519PublicKey:
    """Load a public key from PEM text/bytes, the base64 raw form, or a file holding either.

    A string is PEM if it contains ``-----BEGIN``, the raw form if it is exactly 44 base64
    characters decoding to 32 bytes, and a file path otherwise.
    """
    if isinstance(source, Ed25519PublicKey):
        return source
    if isinstance(source, bytes):
        return _public_from_bytes(source, "inline public key")
    if isinstance(source, str):
        if "-----BEGIN" in source:
            return _public_from_bytes(source.encode("ascii", "replace"), "inline public key")
        raw = decode_raw_key(source)
        if raw is not None:
            return Ed25519PublicKey.from_public_bytes(raw)
        if not _exists(source):
            raise KeyFormatError(
                f"{source!r}: no such key file, and not an ed25519 public key given inline "
                f"(expected a PEM file path, PEM text, or {RAW_KEY_BASE64_CHARS} characters of "
                f"base64 of the raw {PUBLIC_KEY_BYTES}-byte key)"
            )
    path = Path(source)
    return _public_from_bytes(_read_key_file(path, "public"), str(path))


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load an unencrypted PKCS#8 PEM ed25519 private key (as ``generate_keypair`` writes)."""
    path = Path(path)
    data = _read_key_file(path, "private")
    expected = "expected an ed25519 private key in PEM, like edgesight.key"
    if b"PRIVATE KEY" not in data:
        hint = "; this is a public key" if b"PUBLIC KEY" in data else ""
        raise KeyFormatError(f"{path}: not a private key{hint} ({expected})")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # cryptography's answer to an encrypted key without a password
        raise KeyFormatError(
            f"{path}: the private key is encrypted; edgesight keys are unencrypted PEM, "
            "protected by file mode 0600"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        # The exception text is not included: it must never echo key material.
        raise KeyFormatError(f"{path}: cannot parse the key ({expected})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        kind = type(key).__name__.removeprefix("_").removesuffix("PrivateKey") or "other"
        raise KeyFormatError(f"{path}: holds a {kind} key ({expected})")
    return key


def encode_signature(signature: bytes) -> bytes:
    return base64.b64encode(signature) + b"\n"


def sign_manifest(
    bundle_dir: str | os.PathLike[str], private_key: Ed25519PrivateKey | str | os.PathLike[str]
) -> Path:
    """Sign the exact bytes of ``bundle_dir/manifest.json``; write and return ``manifest.sig``."""
    bundle = Path(bundle_dir)
    key = (
        private_key if isinstance(private_key, Ed25519PrivateKey) else load_private_key(private_key)
    )
    try:
        manifest = (bundle / MANIFEST).read_bytes()
    except FileNotFoundError as exc:
        raise ValueError(f"bundle {bundle}: {MANIFEST} is missing; nothing to sign") from exc
    out = bundle / SIGNATURE
    write_atomic(out, encode_signature(key.sign(manifest)), SIGNATURE_FILE_MODE)
    return out


def _keys_phrase(fingerprints: Sequence[str]) -> str:
    if len(fingerprints) == 1:
        return f"the configured key {fingerprints[0]}"
    return f"one of {len(fingerprints)} keys: {', '.join(fingerprints)}"


def read_signature(bundle: Path, fingerprints: Sequence[str]) -> bytes:
    """The 64 raw signature bytes from ``manifest.sig``; SignatureError if missing or malformed."""
    path = bundle / SIGNATURE
    malformed = (
        f"bundle {bundle}: {SIGNATURE} is malformed (expected one line of base64 encoding a "
        f"{SIGNATURE_BYTES}-byte ed25519 signature"
    )
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise SignatureError(
            f"bundle {bundle} is not signed (no {SIGNATURE}) but the agent requires a signature "
            f"from {_keys_phrase(fingerprints)}"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise SignatureError(f"{malformed}, got something that is not a regular file)")
    if info.st_size > MAX_SIGNATURE_FILE_BYTES:
        raise SignatureError(f"{malformed}, got a file of {info.st_size} bytes)")
    try:
        signature = base64.b64decode(path.read_bytes().strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"{malformed}, got text that is not base64: {exc})") from exc
    if len(signature) != SIGNATURE_BYTES:
        raise SignatureError(f"{malformed}, got base64 of {len(signature)} bytes)")
    return signature


def verify_bundle_signature(
    bundle_dir: str | os.PathLike[str],
    manifest_bytes: bytes,
    public_keys: Sequence[PublicKeySource],
) -> str:
    """Check ``manifest.sig`` over ``manifest_bytes``; return the matching key's fingerprint.

    Pass the very bytes that will be parsed, so what is verified is what is trusted. Call only
    when keys are configured: an empty ``public_keys`` is a caller mistake (ValueError).
    """
    bundle = Path(bundle_dir)
    keys = [load_public_key(k) for k in public_keys]
    if not keys:
        raise ValueError("verify_bundle_signature needs at least one public key")
    fingerprints = [fingerprint(k) for k in keys]
    signature = read_signature(bundle, fingerprints)
    for key, fp in zip(keys, fingerprints, strict=True):
        try:
            key.verify(signature, manifest_bytes)
        except InvalidSignature:
            continue
        return fp
    raise SignatureError(
        f"bundle {bundle}: {SIGNATURE} does not verify against any of the configured keys: "
        f"{', '.join(fingerprints)} (the manifest changed after signing, or another key signed it)"
    )


def _walk(bundle: Path, skip: set[str]) -> Iterator[tuple[str, os.stat_result]]:
    """(relative posix path, lstat) of every entry, not following symlinks.

    A folder is descended lazily, after the caller saw it: one it adds to ``skip`` meanwhile is
    not entered.
    """
    pending = [("", bundle)]
    while pending:
        prefix, folder = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                rel = prefix + entry.name
                info = entry.stat(follow_symlinks=False)
                yield rel, info
                if stat.S_ISDIR(info.st_mode) and rel not in skip:
                    pending.append((rel + "/", Path(entry.path)))


def _named(names: list[str]) -> str:
    shown = ", ".join(sorted(names)[:MAX_NAMED_IN_ERROR])
    more = len(names) - MAX_NAMED_IN_ERROR
    return shown + (f" ... and {more} more" if more > 0 else "")


def check_no_unlisted_files(bundle_dir: str | os.PathLike[str], listed: Iterable[str]) -> None:
    """Refuse entries the manifest does not list, symlinks and special files, naming them all.

    The signature covers only what the manifest lists, so with signatures required a bundle
    must be exactly that plus manifest.json and manifest.sig; anything else would be trusted
    content nobody signed (a second model, a shadowing file beside the real one).
    """
    bundle = Path(bundle_dir)
    files = {PurePosixPath(name).as_posix() for name in listed} | {MANIFEST, SIGNATURE}
    folders = {p.as_posix() for name in files for p in PurePosixPath(name).parents} - {"."}
    extra_dirs: set[str] = set()
    extra: list[str] = []
    odd: list[str] = []
    for rel, info in _walk(bundle, skip=extra_dirs):
        if stat.S_ISLNK(info.st_mode):
            odd.append(f"{rel} (a symlink)")
        elif stat.S_ISDIR(info.st_mode):
            if rel not in folders:
                extra_dirs.add(rel)  # named once, its contents not listed one by one
                extra.append(rel + "/")
        elif not stat.S_ISREG(info.st_mode):
            odd.append(f"{rel} (not a regular file)")
        elif rel not in files:
            extra.append(rel)
    problems = []
    if extra:
        problems.append(f"not listed in {MANIFEST}: {_named(extra)}")
    if odd:
        problems.append(f"not allowed: {_named(odd)}")
    if problems:
        raise SignatureError(
            f"bundle {bundle}: " + "; ".join(problems) + f" (a signed bundle holds exactly "
            f"the files its manifest lists, as regular files, plus {MANIFEST} and {SIGNATURE})"
        )
