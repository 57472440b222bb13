"""check_candidate: every reason a downloaded bundle is refused before it is tried, in order,
on real signed archives from tools/bad_models.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.bundle.manifest import Manifest
from edge_agent.updates.verify import Candidate, CandidateError, agent_satisfies, check_candidate
from tools.bad_models import build, pack

KEY = Ed25519PrivateKey.generate()


def _needs(*labels: str) -> Any:
    """A config_labels_problem callback for stages naming ``labels``."""

    def problems(model_labels: list[str]) -> list[str]:
        return [
            f"label {x!r} is not one of the model's labels" for x in labels if x not in model_labels
        ]

    return problems


def _check(
    tmp_path: Path, kind: str = "good", *, archive_fix: Any = None, **over: Any
) -> Candidate:
    bundle_kw = {k: over.pop(k) for k in ("version", "requires_agent", "name") if k in over}
    folder = build(kind, tmp_path / kind, KEY, **bundle_kw)
    archive, sha256, size = pack(folder, tmp_path / f"{kind}.tar.gz")
    if archive_fix is not None:
        archive_fix(archive)
    args: dict[str, Any] = {
        "sha256": sha256,
        "size": size,
        "public_keys": [KEY.public_key()],
        "highest_version": 1,
        "allow_downgrade": False,
        "expected_task": "detect",
        "config_labels_problem": _needs("red"),
        "agent_version": "0.9.0",
        "work_dir": tmp_path / "models",
    }
    return check_candidate(archive, **{**args, **over})


def test_a_good_candidate_is_unpacked_and_named(tmp_path: Path) -> None:
    got = _check(tmp_path, version=2)
    assert got.folder == tmp_path / "models" / got.folder.name
    assert (got.folder / "manifest.json").is_file() and (got.folder / "model.onnx").is_file()
    assert (got.name, got.version) == ("colour-blocks", 2)
    assert got.signed_by is not None and got.bundle.signed_by == got.signed_by


def _refused(tmp_path: Path, kind: str = "good", **over: Any) -> str:
    with pytest.raises(CandidateError) as info:
        _check(tmp_path, kind, **over)
    return info.value.reason


@pytest.mark.parametrize(
    ("kind", "over", "words"),
    [
        ("good", {"size": 5}, "bytes, but the update named 5 bytes"),
        ("good", {"sha256": "0" * 64}, "sha256 mismatch: the update named 000"),
        ("good", {"public_keys": []}, "updates need model.public_keys"),
        ("unsigned", {}, "is not signed (no manifest.sig)"),
        ("wrong_key", {}, "does not verify against any of the configured keys"),
        ("bad_signature", {}, "does not verify against any of the configured keys"),
        ("good", {"version": 1}, "version 1 is not higher than 1, accepted before"),
        ("good", {"version": 3, "highest_version": 4}, "version 3 is not higher than 4"),
        ("good", {"expected_task": "classify"}, "is a detect model, but the running model"),
        ("other_labels", {}, "need labels the bundle lacks: label 'red'"),
        ("good", {"requires_agent": ">=1.2"}, "needs an agent >=1.2, this agent is 0.9.0"),
        ("good", {"requires_agent": ">=0.1,<0.9"}, "needs an agent >=0.1,<0.9"),
    ],
)
def test_refusals_say_why(tmp_path: Path, kind: str, over: dict[str, Any], words: str) -> None:
    assert words in _refused(tmp_path, kind, **over)
    # A refused candidate leaves nothing unpacked behind.
    models = tmp_path / "models"
    assert not models.exists() or not any(models.iterdir())


def test_checks_run_in_order(tmp_path: Path) -> None:
    """Wrong bytes are refused before the archive is even opened; a bad signature before the
    version is looked at."""
    assert "sha256 mismatch" in _refused(tmp_path, "wrong_key", sha256="f" * 64, version=0)
    assert "does not verify" in _refused(tmp_path, "wrong_key", version=0)


def test_downgrade_only_when_allowed(tmp_path: Path) -> None:
    got = _check(tmp_path, version=3, highest_version=4, allow_downgrade=True)
    assert got.version == 3


def test_no_version_accepted_before(tmp_path: Path) -> None:
    assert _check(tmp_path, version=0, highest_version=None).version == 0


def test_unsafe_archive_is_refused(tmp_path: Path) -> None:
    """An archive with a symlink member, its size and sha256 matching what was commanded."""
    import io
    import tarfile

    from edge_agent.fsutil import sha256_file

    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("manifest.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        tar.addfile(tarfile.TarInfo("x"), io.BytesIO(b""))
    with pytest.raises(CandidateError, match=r"unsafe or corrupt archive: .*symlink"):
        check_candidate(
            archive,
            sha256=sha256_file(archive),
            size=archive.stat().st_size,
            public_keys=[KEY.public_key()],
            highest_version=None,
            allow_downgrade=False,
            expected_task="detect",
            config_labels_problem=_needs(),
            agent_version="1",
            work_dir=tmp_path / "models",
        )


def test_a_folder_already_there_is_reverified_and_kept(tmp_path: Path) -> None:
    """The same archive checked twice (a retry after a crash) reuses the folder; refusing it
    the second time (now an old version) must not delete it: it may be the running model."""
    first = _check(tmp_path, version=2)
    work = tmp_path / "models"
    with pytest.raises(CandidateError, match="not higher"):
        check_candidate(
            tmp_path / "good.tar.gz",
            sha256=first.folder.name,
            size=(tmp_path / "good.tar.gz").stat().st_size,
            public_keys=[KEY.public_key()],
            highest_version=2,
            allow_downgrade=False,
            expected_task="detect",
            config_labels_problem=_needs(),
            agent_version="1",
            work_dir=work,
        )
    assert (first.folder / "manifest.json").is_file()


@pytest.mark.parametrize(
    ("need", "have", "ok"),
    [
        (">=0.9", "0.9", True),
        (">=0.9", "0.10.1", True),
        (">=0.9", "0.8.9", False),
        ("<2", "1.99", True),
        ("<2", "2.0.0", False),
        ("==1.0", "1", True),
        ("==1.0", "1.0.1", False),
        (">= 1.2, < 1.3", "1.2.7", True),
        (">=1.2", "1.2.0rc1", True),  # the agent's suffix is ignored: a pre-release counts
    ],
)
def test_agent_version_constraints(need: str, have: str, ok: bool) -> None:
    assert agent_satisfies(need, have) is ok


def test_manifest_refuses_a_malformed_requirement() -> None:
    body = {
        "schema": "edgesight.bundle/1",
        "name": "x",
        "version": 1,
        "task": "classify",
        "labels": ["a"],
        "model": {"file": "m.onnx", "format": "onnx"},
        "input": {"width": 8, "height": 8},
        "decoder": {"type": "softmax"},
        "files": {"m.onnx": "0" * 64},
    }
    assert Manifest.model_validate({**body, "requires_agent": ">=0.9"}).requires_agent == ">=0.9"
    with pytest.raises(ValueError, match="requires_agent"):
        Manifest.model_validate({**body, "requires_agent": "~0.9"})
