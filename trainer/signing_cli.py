"""``edge-trainer keygen | sign | pack``: make a signing key, sign a bundle, pack it to ship.

``trainer/cli.py`` calls ``add_signing_commands(sub)``. Each handler returns an exit code and
reports bad input (a key, a bundle, a path) as ``error: <message>`` on stderr with code 2
itself, so it behaves the same whoever dispatches it; any other exception is a bug and
propagates. No torch here: signing runs on any laptop or CI box.
"""

from __future__ import annotations

import argparse
import gzip
import stat
import sys
import tarfile
from pathlib import Path
from typing import Any

from edge_agent.bundle import load_bundle
from edge_agent.bundle.signing import (
    MANIFEST,
    SIGNATURE,
    check_no_unlisted_files,
    fingerprint,
    generate_keypair,
    load_private_key,
    public_key_base64,
    sign_manifest,
    verify_bundle_signature,
)
from edge_agent.cli.common import EXIT_OK
from edge_agent.fsutil import atomic_writer, write_atomic
from trainer.cli_support import AGENT_INPUT_ERRORS, INPUT_ERRORS, error
from trainer.errors import InputError

PRIVATE_KEY_FILE = "edgesight.key"
PUBLIC_KEY_FILE = "edgesight.pub"
PRIVATE_KEY_MODE = 0o600  # owner only, as ssh insists for its keys
PUBLIC_KEY_MODE = 0o644
KEY_DIR_MODE = 0o700
PACK_MTIME = 0  # s since the epoch for every member: the same bundle packs to the same bytes
PACK_FILE_MODE = 0o644
PACK_GZIP_LEVEL = 9  # bundles are packed once and downloaded by many devices
PACK_SUFFIXES = (".tar.gz", ".tgz", ".tar")
#: A user's key, bundle or output path: the trainer's input errors and edge_agent's.
SIGNING_INPUT_ERRORS = (*INPUT_ERRORS, *AGENT_INPUT_ERRORS)


def add_signing_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``keygen``, ``sign`` and ``pack`` on the trainer's sub-command parsers."""
    keygen = subparsers.add_parser("keygen", help="make an ed25519 key pair for signing bundles")
    keygen.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="KEYDIR",
        help=f"folder for {PRIVATE_KEY_FILE} and {PUBLIC_KEY_FILE}",
    )
    keygen.add_argument("--force", action="store_true", help="replace an existing key pair")
    keygen.set_defaults(func=run_keygen)

    sign = subparsers.add_parser("sign", help="sign a bundle's manifest.json (writes manifest.sig)")
    sign.add_argument("bundle", metavar="BUNDLE", type=Path, help="bundle folder")
    sign.add_argument("--key", type=Path, required=True, help=f"private key ({PRIVATE_KEY_FILE})")
    sign.set_defaults(func=run_sign)

    pack = subparsers.add_parser("pack", help="pack a bundle folder into a reproducible .tar.gz")
    pack.add_argument("bundle", metavar="BUNDLE", type=Path, help="bundle folder")
    pack.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FILE",
        help="archive to write: FILE.tar.gz, FILE.tgz or FILE.tar",
    )
    pack.set_defaults(func=run_pack)


def keygen(out: Path, force: bool = False) -> tuple[Path, Path]:
    """Write a new key pair into ``out``; refuse to replace one unless ``force``."""
    out.mkdir(mode=KEY_DIR_MODE, parents=True, exist_ok=True)
    private, public = out / PRIVATE_KEY_FILE, out / PUBLIC_KEY_FILE
    existing = [str(p) for p in (private, public) if p.exists() or p.is_symlink()]
    if existing and not force:
        raise InputError(
            f"{', '.join(existing)} already exists; bundles signed with that key would no longer "
            "verify on devices that trust only the new one. Use --force to replace it"
        )
    private_pem, public_pem = generate_keypair()
    write_atomic(private, private_pem, PRIVATE_KEY_MODE)
    write_atomic(public, public_pem, PUBLIC_KEY_MODE)
    return private, public


def run_keygen(args: argparse.Namespace) -> int:
    try:
        private, public = keygen(args.out, args.force)
        key = load_private_key(private).public_key()
    except SIGNING_INPUT_ERRORS as exc:
        return error(exc)
    print(f"wrote {private} (private, mode 0600: keep it secret and off the devices)")
    print(f"wrote {public}")
    print(f"fingerprint: {fingerprint(key)}")
    print(f"public key for the agent's model.public_keys: {public_key_base64(key)}")
    return EXIT_OK


def sign_bundle(bundle: Path, key_path: Path) -> str:
    """Check the bundle is complete and exact, sign it, verify the result; return the fingerprint.

    Signing a bundle the agent would refuse anyway (a wrong sha256, an unlisted file) only
    moves the failure to a device, so it is refused here.
    """
    key = load_private_key(key_path)
    loaded = load_bundle(bundle)
    check_no_unlisted_files(bundle, loaded.manifest.files)
    sign_manifest(bundle, key)
    manifest = (bundle / MANIFEST).read_bytes()
    return verify_bundle_signature(bundle, manifest, [key.public_key()])


def run_sign(args: argparse.Namespace) -> int:
    try:
        fp = sign_bundle(args.bundle, args.key)
        mode = args.key.stat().st_mode
    except SIGNING_INPUT_ERRORS as exc:
        return error(exc)
    print(f"signed {args.bundle / SIGNATURE} with key {fp}")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(
            f"warning: {args.key} is readable by others (mode {stat.S_IMODE(mode):04o}); "
            f"chmod 600 {args.key}",
            file=sys.stderr,
        )
    return EXIT_OK


def _members(bundle: Path) -> list[str]:
    """What a pack holds: manifest, signature if any, the listed files; nothing unlisted."""
    loaded = load_bundle(bundle)
    check_no_unlisted_files(bundle, loaded.manifest.files)
    names = {MANIFEST, *(Path(n).as_posix() for n in loaded.manifest.files)}
    if (bundle / SIGNATURE).is_file():
        names.add(SIGNATURE)
    return sorted(names)


def _add(tar: tarfile.TarFile, bundle: Path, name: str) -> None:
    path = bundle / name
    info = tarfile.TarInfo(name)
    info.size = path.stat().st_size
    info.mode, info.mtime = PACK_FILE_MODE, PACK_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    with path.open("rb") as fh:
        tar.addfile(info, fh)


def pack_bundle(bundle: Path, out: Path) -> Path:
    """Write ``out`` deterministically: sorted members at the archive root, fixed metadata."""
    if not out.name.lower().endswith(PACK_SUFFIXES):
        raise InputError(f"{out}: expected a name ending in {', '.join(PACK_SUFFIXES)}")
    if out.resolve().is_relative_to(bundle.resolve()):
        raise InputError(f"{out}: the archive must not be written inside the bundle {bundle}")
    names = _members(bundle)
    with atomic_writer(out, PACK_FILE_MODE) as raw:  # whole or absent, the folder fsynced
        gz = None
        if not out.name.lower().endswith(".tar"):
            # No file name and a fixed time in the gzip header, or bytes differ per run.
            gz = gzip.GzipFile(
                filename="",
                mode="wb",
                fileobj=raw,
                compresslevel=PACK_GZIP_LEVEL,
                mtime=PACK_MTIME,
            )
        with tarfile.open(fileobj=gz or raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in names:
                _add(tar, bundle, name)
        if gz is not None:
            gz.close()  # writes the gzip trailer; leaves ``raw`` open
    return out


def run_pack(args: argparse.Namespace) -> int:
    try:
        out = pack_bundle(args.bundle, args.out)
    except SIGNING_INPUT_ERRORS as exc:
        return error(exc)
    signed = "signed" if (args.bundle / SIGNATURE).is_file() else "unsigned"
    print(f"packed {signed} bundle {args.bundle} into {out} ({out.stat().st_size} bytes)")
    return EXIT_OK
