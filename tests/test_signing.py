"""Bundle signatures: keys, signing, verification, and the keygen / sign commands."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.bundle import BundleError, parse_manifest, verify_files, write_manifest
from edge_agent.bundle.signing import (
    SIGNATURE,
    KeyFormatError,
    SignatureError,
    check_no_unlisted_files,
    fingerprint,
    generate_keypair,
    load_private_key,
    load_public_key,
    public_key_base64,
    sign_manifest,
    verify_bundle_signature,
)
from trainer.signing_cli import add_signing_commands

MANIFEST_BASE = {
    "schema": "edgesight.bundle/1",
    "name": "toy",
    "version": 3,
    "task": "classify",
    "labels": ["a", "b"],
    "model": {"file": "model.onnx", "format": "onnx"},
    "input": {"width": 8, "height": 8},
    "decoder": {"type": "softmax"},
}


def make_bundle(path: Path, files: dict[str, bytes] | None = None) -> Path:
    """A bundle folder whose manifest lists ``files`` (default: a dummy model) with hashes."""
    files = files or {"model.onnx": b"not really onnx"}
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    write_manifest(path, {**MANIFEST_BASE, "files": dict.fromkeys(files, "")})
    return path


def load_signed(bundle: Path, keys: list) -> str:
    """The order the agent checks a bundle in when keys are configured (see docs/signing.md)."""
    raw = (bundle / "manifest.json").read_bytes()
    signer = verify_bundle_signature(bundle, raw, keys)
    manifest = parse_manifest(raw, bundle)
    check_no_unlisted_files(bundle, manifest.files)
    verify_files(bundle, manifest)
    return signer


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def signed(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    bundle = make_bundle(tmp_path / "bundle")
    sign_manifest(bundle, key)
    return bundle


def pub_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_generated_pair_round_trips_through_pem(tmp_path):
    private_pem, public_pem = generate_keypair()
    (tmp_path / "k").write_bytes(private_pem)
    private = load_private_key(tmp_path / "k")
    assert fingerprint(private.public_key()) == fingerprint(load_public_key(public_pem))


def test_fingerprint_is_16_hex_of_sha256_of_raw_key(key):
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert fingerprint(key.public_key()) == hashlib.sha256(raw).hexdigest()[:16]


def test_good_signature_verifies_and_names_its_key(signed, key):
    assert load_signed(signed, [pub_pem(key)]) == fingerprint(key.public_key())


def test_signature_file_is_one_line_of_base64_over_the_exact_manifest_bytes(signed, key):
    text = (signed / SIGNATURE).read_bytes()
    assert text.endswith(b"\n") and text.count(b"\n") == 1
    signature = base64.b64decode(text.rstrip(b"\n"), validate=True)
    assert len(signature) == 64
    key.public_key().verify(signature, (signed / "manifest.json").read_bytes())


def test_same_json_with_other_whitespace_does_not_verify(signed, key):
    manifest = signed / "manifest.json"
    manifest.write_text(json.dumps(json.loads(manifest.read_text())), encoding="utf-8")
    with pytest.raises(SignatureError, match="does not verify"):
        load_signed(signed, [pub_pem(key)])


def test_one_changed_manifest_byte_fails(signed, key):
    manifest = signed / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"version": 3', b'"version": 4'))
    with pytest.raises(SignatureError, match=fingerprint(key.public_key())):
        load_signed(signed, [pub_pem(key)])


_KEY = Ed25519PrivateKey.generate()
_MANIFEST = json.dumps({**MANIFEST_BASE, "files": {"model.onnx": "0" * 64}}).encode()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_single_byte_change_fails(data):
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp)
        (bundle / SIGNATURE).write_bytes(base64.b64encode(_KEY.sign(_MANIFEST)) + b"\n")
        i = data.draw(st.integers(0, len(_MANIFEST) - 1), label="index")
        flip = data.draw(st.integers(1, 255), label="xor")
        tampered = bytearray(_MANIFEST)
        tampered[i] ^= flip
        with pytest.raises(SignatureError, match="does not verify"):
            verify_bundle_signature(bundle, bytes(tampered), [_KEY.public_key()])


def test_tampered_model_passes_the_signature_but_not_the_sha256(signed, key):
    (signed / "model.onnx").write_bytes(b"a different model")
    raw = (signed / "manifest.json").read_bytes()
    verify_bundle_signature(signed, raw, [key.public_key()])  # the manifest itself is intact
    with pytest.raises(BundleError, match=r"model\.onnx: sha256 mismatch"):
        load_signed(signed, [key.public_key()])


def test_wrong_keys_fail_naming_every_fingerprint(signed, key):
    others = [Ed25519PrivateKey.generate().public_key() for _ in range(2)]
    with pytest.raises(SignatureError) as err:
        load_signed(signed, others)
    message = str(err.value)
    assert "does not verify against any of the configured keys" in message
    assert all(fingerprint(k) in message for k in others)
    assert fingerprint(key.public_key()) not in message


def test_any_configured_key_may_match(signed, key):
    keys = [Ed25519PrivateKey.generate().public_key(), key.public_key()]
    assert load_signed(signed, keys) == fingerprint(key.public_key())


def test_missing_signature_with_keys_configured_fails(tmp_path, key):
    bundle = make_bundle(tmp_path)
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(SignatureError) as err:
        load_signed(bundle, [key.public_key(), other])
    assert f"bundle {bundle} is not signed (no manifest.sig)" in str(err.value)
    assert "one of 2 keys" in str(err.value) and fingerprint(other) in str(err.value)


def test_no_keys_is_a_caller_mistake(signed):
    with pytest.raises(ValueError, match="at least one public key") as err:
        verify_bundle_signature(signed, b"{}", [])
    assert not isinstance(err.value, SignatureError)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "base64 of 0 bytes"),
        (b"not base64 at all!\n", "not base64"),
        (base64.b64encode(bytes(63)) + b"\n", "base64 of 63 bytes"),
        (bytes(range(64)), "not base64"),  # the raw signature instead of its base64
        (b"A" * 4096, "a file of 4096 bytes"),
    ],
)
def test_malformed_signature_file_is_named(signed, key, content, why):
    (signed / SIGNATURE).write_bytes(content)
    with pytest.raises(SignatureError, match=r"manifest\.sig is malformed") as err:
        load_signed(signed, [key.public_key()])
    assert why in str(err.value)


def test_signature_that_is_a_folder_is_malformed(tmp_path, key):
    bundle = make_bundle(tmp_path)
    (bundle / SIGNATURE).mkdir()
    with pytest.raises(SignatureError, match="not a regular file"):
        load_signed(bundle, [key.public_key()])


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_signature_bytes_never_verify_and_only_raise_signature_error(content):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / SIGNATURE).write_bytes(content)
        with pytest.raises(SignatureError):
            verify_bundle_signature(tmp, _MANIFEST, [_KEY.public_key()])


def test_extra_unlisted_files_are_named(signed, key):
    (signed / "model.onnx.bak").write_bytes(b"old model")
    (signed / "junk").mkdir()
    (signed / "junk" / "x.bin").write_bytes(b"x")
    with pytest.raises(SignatureError) as err:
        load_signed(signed, [key.public_key()])
    assert "not listed in manifest.json: junk/, model.onnx.bak" in str(err.value)


def test_listed_files_in_subfolders_are_fine_and_symlinks_are_not(tmp_path, key):
    bundle = make_bundle(tmp_path / "b", {"model.onnx": b"m", "aux/anchors.npy": b"a"})
    sign_manifest(bundle, key)
    assert load_signed(bundle, [key.public_key()])
    (bundle / "link").symlink_to(bundle / "model.onnx")
    with pytest.raises(SignatureError, match=r"link \(a symlink\)"):
        load_signed(bundle, [key.public_key()])


def test_a_listed_file_replaced_by_a_symlink_is_refused(tmp_path, key):
    bundle = make_bundle(tmp_path / "b")
    real = tmp_path / "elsewhere.onnx"
    (bundle / "model.onnx").rename(real)
    (bundle / "model.onnx").symlink_to(real)
    with pytest.raises(SignatureError, match=r"model.onnx \(a symlink\)"):
        check_no_unlisted_files(bundle, {"model.onnx"})


def test_raw_base64_public_key_works_inline_and_in_a_file(signed, key, tmp_path):
    line = public_key_base64(key.public_key())
    assert len(line) == 44
    assert load_signed(signed, [line]) == fingerprint(key.public_key())
    (tmp_path / "k.pub").write_text(line + "\n")
    assert load_signed(signed, [tmp_path / "k.pub", str(tmp_path / "k.pub")])


def test_public_key_from_pem_file_path(signed, key, tmp_path):
    (tmp_path / "edgesight.pub").write_bytes(pub_pem(key))
    assert load_signed(signed, [str(tmp_path / "edgesight.pub")])


def test_public_key_errors_name_the_file_and_the_expectation(tmp_path, key):
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "priv.pem").write_bytes(private_pem)
    with pytest.raises(KeyFormatError, match=r"priv.pem: is a private key; expected an ed25519"):
        load_public_key(tmp_path / "priv.pem")
    (tmp_path / "junk.pub").write_text("hello\n")
    with pytest.raises(KeyFormatError, match=r"junk.pub: not an ed25519 public key"):
        load_public_key(tmp_path / "junk.pub")
    with pytest.raises(KeyFormatError, match=r"'nope.pub': no such key file"):
        load_public_key("nope.pub")
    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "rsa.pub").write_bytes(rsa_pem)
    with pytest.raises(KeyFormatError, match=r"rsa.pub: holds a RSA key, expected an ed25519"):
        load_public_key(tmp_path / "rsa.pub")


def test_private_key_errors(tmp_path, key):
    (tmp_path / "k.pub").write_bytes(pub_pem(key))
    with pytest.raises(KeyFormatError, match=r"k\.pub: not a private key; this is a public key"):
        load_private_key(tmp_path / "k.pub")
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    (tmp_path / "enc.key").write_bytes(encrypted)
    with pytest.raises(KeyFormatError, match=r"enc\.key: the private key is encrypted"):
        load_private_key(tmp_path / "enc.key")
    with pytest.raises(KeyFormatError, match=r"missing\.key: cannot read key file"):
        load_private_key(tmp_path / "missing.key")


# --- the keygen and sign commands ---------------------------------------------------------


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edge-trainer")
    add_signing_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_keygen_writes_a_private_key_only_the_owner_can_read(tmp_path, capsys):
    assert run(["keygen", "--out", str(tmp_path / "keys")]) == 0
    private, public = tmp_path / "keys" / "edgesight.key", tmp_path / "keys" / "edgesight.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    fp = fingerprint(load_public_key(public))
    assert fingerprint(load_private_key(private).public_key()) == fp
    out = capsys.readouterr().out
    assert f"fingerprint: {fp}" in out
    assert public_key_base64(load_public_key(public)) in out


def test_keygen_refuses_to_overwrite_without_force(tmp_path, capsys):
    keys = tmp_path / "keys"
    assert run(["keygen", "--out", str(keys)]) == 0
    before = (keys / "edgesight.key").read_bytes()
    assert run(["keygen", "--out", str(keys)]) == 2
    assert (keys / "edgesight.key").read_bytes() == before
    assert run(["keygen", "--out", str(keys), "--force"]) == 0
    assert (keys / "edgesight.key").read_bytes() != before
    assert stat.S_IMODE((keys / "edgesight.key").stat().st_mode) == 0o600


def test_keygen_error_message(tmp_path, capsys):
    run(["keygen", "--out", str(tmp_path)])
    capsys.readouterr()
    assert run(["keygen", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "edgesight.key" in err and "--force" in err


def test_sign_command_signs_and_prints_the_fingerprint(tmp_path, capsys):
    run(["keygen", "--out", str(tmp_path / "keys")])
    bundle = make_bundle(tmp_path / "b")
    assert run(["sign", str(bundle), "--key", str(tmp_path / "keys" / "edgesight.key")]) == 0
    public = load_public_key(tmp_path / "keys" / "edgesight.pub")
    assert fingerprint(public) in capsys.readouterr().out
    assert load_signed(bundle, [public]) == fingerprint(public)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda b: (b / "model.onnx").write_bytes(b"changed"), "sha256 mismatch"),
        (lambda b: (b / "notes.txt").write_text("hi"), "not listed in manifest.json: notes.txt"),
    ],
)
def test_sign_refuses_a_bundle_the_agent_would_refuse(tmp_path, capsys, spoil, message):
    run(["keygen", "--out", str(tmp_path / "keys")])
    bundle = make_bundle(tmp_path / "b")
    spoil(bundle)
    assert run(["sign", str(bundle), "--key", str(tmp_path / "keys" / "edgesight.key")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (bundle / SIGNATURE).exists()


def test_sign_warns_about_a_key_others_can_read(tmp_path, capsys):
    run(["keygen", "--out", str(tmp_path / "keys")])
    key_file = tmp_path / "keys" / "edgesight.key"
    os.chmod(key_file, 0o644)
    assert run(["sign", str(make_bundle(tmp_path / "b")), "--key", str(key_file)]) == 0
    assert "chmod 600" in capsys.readouterr().err
