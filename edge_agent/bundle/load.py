"""Load and verify a model bundle: manifest schema, every file's sha256, the model file.

A bundle is a folder or a ``.tar.gz`` / ``.tgz`` / ``.tar`` of one; an archive is unpacked once
into a cache folder (cache.py) and then verified like any folder. A bundle is checked completely
before anything runs it, so a half-copied or tampered model is refused with an error naming the
bundle, the file and what was expected, instead of producing wrong detections in the field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from edge_agent.bundle.manifest import MANIFEST, Manifest
from edge_agent.config.errors import validation_issues
from edge_agent.fsutil import sha256_file

if TYPE_CHECKING:
    from edge_agent.bundle.signing import PublicKeySource


def _expected() -> str:
    """What ``load_bundle`` takes, for its error messages."""
    from edge_agent.bundle.archive import SUFFIXES

    names = list(SUFFIXES)
    archives = f"{', '.join(names[:-1])} or {names[-1]}"
    return f"expected a folder with {MANIFEST}, or a {archives} archive of one"


#: What ``inspect-model`` writes where a person must decide; a manifest holding it is refused.
TODO = "TODO"
TODO_DOC = "docs/bundle.md#todo-fields"


def todo_paths(data: Any, path: str = "") -> list[str]:
    """Where ``data`` still holds a TODO (a string starting with it), as ``input.mean``."""
    if isinstance(data, str):
        return [path or "<root>"] if data.startswith(TODO) else []
    if isinstance(data, dict):
        items = [(f"{path}.{k}" if path else str(k), v) for k, v in data.items()]
        keys = [p for p, _ in items if p.rsplit(".", 1)[-1].startswith(TODO)]
        return keys + [p for k, v in items for p in todo_paths(v, k)]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in todo_paths(v, f"{path}[{i}]")]
    return []


class BundleError(ValueError):
    """The bundle cannot be used; the message says which bundle, which file and why."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Manifest
    manifest_sha256: str  # identifies the whole bundle: the manifest pins every file's hash
    signed_by: str | None = None  # fingerprint of the key whose signature verified, if checked
    archive: Path | None = None  # the archive ``path`` was unpacked from, if any

    @property
    def source(self) -> Path:
        """Where the bundle came from, as the user named it: the archive, else the folder."""
        return self.archive or self.path

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model.file

    @property
    def model_id(self) -> str:
        return f"{self.manifest.name}@{self.manifest.version}"

    def describe(self) -> dict[str, object]:
        """The model as status and result payloads name it."""
        return {
            "name": self.manifest.name,
            "version": self.manifest.version,
            "sha256": self.manifest_sha256,
        }


def _safe_member(bundle: Path, name: str) -> Path:
    """A listed file must stay inside the bundle: no absolute paths, no '..'."""
    parts = PurePosixPath(name).parts
    if not parts or PurePosixPath(name).is_absolute() or ".." in parts:
        raise BundleError(
            f"bundle {bundle}: {MANIFEST}: files: {name!r} must be a relative path "
            "inside the bundle"
        )
    return bundle.joinpath(*parts)


def parse_manifest(raw: bytes, bundle: Path) -> Manifest:
    where = f"bundle {bundle}: {MANIFEST}"
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{where}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{where}: expected a JSON object, got {type(data).__name__}")
    todo = todo_paths(data)
    if todo:
        raise BundleError(
            f"{where}: still TODO: {', '.join(todo)}; replace each with the value for this "
            f"model (what each needs: {TODO_DOC}, and edge-agent inspect-model's report)"
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{i.path or '<root>'}: {i.message}" for i in validation_issues(exc, model=Manifest)
        ]
        raise BundleError(f"{where}: " + "; ".join(problems)) from exc


def verify_files(bundle: Path, manifest: Manifest) -> None:
    """Every listed file exists and matches its sha256; all problems are reported at once."""
    problems = []
    for name, expected in sorted(manifest.files.items()):
        path = _safe_member(bundle, name)
        if not path.is_file():
            problems.append(f"{name}: file is missing")
            continue
        actual = sha256_file(path)
        if actual != expected.lower():
            problems.append(f"{name}: sha256 mismatch (expected {expected}, got {actual})")
    if problems:
        raise BundleError(f"bundle {bundle}: " + "; ".join(problems))


def load_bundle(
    path: str | Path,
    public_keys: Sequence[PublicKeySource] = (),
    *,
    cache_dir: str | Path | None = None,
) -> Bundle:
    """Read, validate and verify the bundle at ``path``: a folder, or an archive of one.

    An archive (``.tar.gz``, ``.tgz``, ``.tar``) is unpacked safely into
    ``cache_dir/<sha256 of the archive>/`` (default: ``default_cache_dir()``), once: later loads
    reuse that folder. Either way the folder is verified on every load: each listed file's
    sha256, and with ``public_keys`` the ed25519 signature over the exact manifest bytes,
    checked before they are parsed, and that the bundle holds no file its manifest does not
    list. ``Bundle.path`` is the folder; ``Bundle.source`` names the archive.
    """
    source = Path(path)
    if source.is_dir():
        return _load_folder(source, public_keys)
    # Archives only from here: tarfile and gzip are imported only by devices that use them.
    from edge_agent.bundle.cache import is_archive_name

    if not source.exists():
        raise BundleError(f"bundle {source}: no such folder or file ({_expected()})")
    if not is_archive_name(source):
        raise BundleError(f"bundle {source}: not a directory or a bundle archive ({_expected()})")
    return _load_archive(source, public_keys, cache_dir)


def _load_archive(
    archive: Path, public_keys: Sequence[PublicKeySource], cache_dir: str | Path | None
) -> Bundle:
    from edge_agent.bundle.archive import ArchiveError
    from edge_agent.bundle.cache import default_cache_dir, unpack_cached

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        unpacked = unpack_cached(archive, cache)
    except ArchiveError as exc:  # names the archive, the member and what was expected
        raise BundleError(str(exc)) from exc
    except OSError as exc:
        raise BundleError(
            f"bundle archive {archive}: cannot unpack it into the cache {cache}: {exc} "
            f"(pass another cache folder, or set $EDGESIGHT_BUNDLE_CACHE)"
        ) from exc
    try:
        bundle = _load_folder(unpacked.folder, public_keys)
    except BundleError as exc:
        hint = (
            f" (unpacked by an earlier load: if that copy changed since, delete "
            f"{unpacked.folder} to unpack the archive again)"
            if unpacked.reused
            else ""
        )
        raise BundleError(f"bundle archive {archive}: {exc}{hint}") from exc
    return replace(bundle, archive=archive)


def _load_folder(bundle: Path, public_keys: Sequence[PublicKeySource]) -> Bundle:
    manifest_path = bundle / MANIFEST
    try:
        raw = manifest_path.read_bytes()
    except FileNotFoundError as exc:
        raise BundleError(f"bundle {bundle}: {MANIFEST} is missing") from exc
    signer = None
    if public_keys:
        signer, manifest = _verified_manifest(bundle, raw, public_keys)
    else:
        manifest = parse_manifest(raw, bundle)
    verify_files(bundle, manifest)
    return Bundle(bundle, manifest, hashlib.sha256(raw).hexdigest(), signer)


def _verified_manifest(
    bundle: Path, raw: bytes, public_keys: Sequence[PublicKeySource]
) -> tuple[str, Manifest]:
    """Check the signature over the very bytes that will be parsed, before trusting them."""
    # Imported here: cryptography costs ~6 MB of RSS, paid only by devices that require
    # signatures.
    from edge_agent.bundle.signing import (
        SignatureError,
        check_no_unlisted_files,
        verify_bundle_signature,
    )

    try:
        signer = verify_bundle_signature(bundle, raw, public_keys)
        manifest = parse_manifest(raw, bundle)
        check_no_unlisted_files(bundle, manifest.files)
    except SignatureError as exc:
        raise BundleError(str(exc)) from exc
    return signer, manifest


def write_manifest(bundle: Path, manifest: dict[str, object]) -> Path:
    """Fill in ``files`` with the sha256 of each listed file and write manifest.json.

    Used by the trainer and by tests to make bundles; the listed names must already exist.
    """
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ValueError("manifest['files'] must name every file of the bundle, the model first")
    manifest = {**manifest, "files": {n: sha256_file(bundle / n) for n in sorted(files)}}
    out = bundle / MANIFEST
    out.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out
