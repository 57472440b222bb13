"""Is a downloaded bundle archive fit to be tried on this device? Checked before it runs.

A remote update must never brick a device, so a candidate is refused for anything the device can
know without running it, cheapest and most fundamental first: the archive's bytes are the ones
commanded (size and sha256), it unpacks safely (bundle/archive.py's caps), it is signed by a
pinned key (an update without signature checking would let anyone who can publish on the broker
install code), its version is newer than every version accepted before (TUF's rollback attack),
and it fits the running config: same task, every label a stage names, an agent recent enough.
Each refusal is a ``CandidateError`` whose message is the reason published on ``<dev>/model``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.bundle import Bundle, BundleError, load_bundle
from edge_agent.bundle.archive import ArchiveError
from edge_agent.bundle.cache import unpack_cached
from edge_agent.bundle.signing import KeyFormatError, PublicKeySource
from edge_agent.fsutil import sha256_file

#: One constraint of ``requires_agent``: an operator and a dotted version.
_CONSTRAINT = re.compile(r"^\s*(>=|<|==)\s*(\d+(?:\.\d+)*)\s*$")
#: Names shown for a list of missing labels before "... and N more".
MAX_PROBLEMS_SHOWN = 5


class CandidateError(ValueError):
    """The candidate is refused; the message is the reason, in words, for the model topic."""

    @property
    def reason(self) -> str:
        return str(self)


@dataclass(frozen=True)
class Candidate:
    folder: Path  # the unpacked, verified bundle: <work_dir>/<sha256 of the archive>/
    bundle: Bundle
    name: str
    version: int
    signed_by: str | None


def _dotted(text: str) -> tuple[int, ...]:
    """'0.9.1' -> (0, 9, 1); a suffix such as '1.2.0rc1' keeps its leading digits (1, 2, 0)."""
    parts = []
    for piece in text.strip().split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
    if not parts:
        raise ValueError(f"expected a dotted version such as 0.9.1, got {text!r}")
    return tuple(parts)


def _compare(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """-1, 0 or 1; missing parts count as 0, so 1.0 == 1.0.0."""
    width = max(len(a), len(b))
    pa, pb = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
    return (pa > pb) - (pa < pb)


def agent_satisfies(requirement: str, agent_version: str) -> bool:
    """True when ``agent_version`` meets every comma-separated constraint (>=, <, ==)."""
    have = _dotted(agent_version)
    for piece in requirement.split(","):
        match = _CONSTRAINT.match(piece)
        if match is None:
            raise ValueError(f"requires_agent: expected '>=0.9', '<2' or '==1.0', got {piece!r}")
        op, want = match.group(1), _dotted(match.group(2))
        order = _compare(have, want)
        if not {">=": order >= 0, "<": order < 0, "==": order == 0}[op]:
            return False
    return True


def _check_bytes(archive: Path, sha256: str, size: int) -> None:
    try:
        actual_size = archive.stat().st_size
    except OSError as exc:
        raise CandidateError(f"cannot read the downloaded archive {archive}: {exc}") from exc
    if actual_size != size:
        raise CandidateError(
            f"the archive is {actual_size} bytes, but the update named {size} bytes"
        )
    actual = sha256_file(archive)
    if actual != sha256.lower():
        raise CandidateError(f"sha256 mismatch: the update named {sha256}, the archive is {actual}")


def _unpack(archive: Path, work_dir: Path) -> tuple[Path, bool]:
    """(the unpacked folder, whether this call made it)."""
    try:
        unpacked = unpack_cached(archive, work_dir)
    except ArchiveError as exc:
        raise CandidateError(f"unsafe or corrupt archive: {exc}") from exc
    except OSError as exc:
        raise CandidateError(f"cannot unpack the archive into {work_dir}: {exc}") from exc
    return unpacked.folder, not unpacked.reused


def _fits(
    bundle: Bundle,
    *,
    highest_version: int | None,
    allow_downgrade: bool,
    expected_task: str,
    config_labels_problem: Callable[[list[str]], list[str]],
    agent_version: str,
) -> None:
    manifest = bundle.manifest
    if highest_version is not None and manifest.version <= highest_version:
        if not allow_downgrade:
            raise CandidateError(
                f"version {manifest.version} is not higher than {highest_version}, accepted before"
            )
    if manifest.task != expected_task:
        raise CandidateError(
            f"the bundle is a {manifest.task} model, but the running model and the config's "
            f"stages are {expected_task}"
        )
    problems = config_labels_problem(list(manifest.labels))
    if problems:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        more = len(problems) - len(shown)
        tail = f"; ... and {more} more" if more else ""
        raise CandidateError(
            "the config's stages need labels the bundle lacks: " + "; ".join(shown) + tail
        )
    need = manifest.requires_agent
    if need is not None and not agent_satisfies(need, agent_version):
        raise CandidateError(f"the bundle needs an agent {need}, this agent is {agent_version}")


def check_candidate(
    archive: Path,
    *,
    sha256: str,
    size: int,
    public_keys: Sequence[PublicKeySource],
    highest_version: int | None,
    allow_downgrade: bool,
    expected_task: str,
    config_labels_problem: Callable[[list[str]], list[str]],
    agent_version: str,
    work_dir: Path,
) -> Candidate:
    """Check ``archive`` completely and unpack it into ``work_dir/<sha256>/``.

    Raises CandidateError with the reason. A folder this call unpacked is removed again when the
    candidate is refused; one that was there already (an earlier attempt, or the running model
    itself) is left alone and, like any cached folder, verified file by file.
    """
    archive = Path(archive)
    _check_bytes(archive, sha256, size)
    folder, made = _unpack(archive, Path(work_dir))
    try:
        if not public_keys:
            raise CandidateError(
                "updates need model.public_keys: an unsigned update could come from anyone "
                "who can publish on the broker"
            )
        try:
            bundle = load_bundle(folder, public_keys)
        except BundleError as exc:
            raise CandidateError(f"refused: {exc}") from exc
        except KeyFormatError as exc:  # a configured key, not the bundle, is at fault
            raise CandidateError(f"model.public_keys: {exc}") from exc
        _fits(
            bundle,
            highest_version=highest_version,
            allow_downgrade=allow_downgrade,
            expected_task=expected_task,
            config_labels_problem=config_labels_problem,
            agent_version=agent_version,
        )
    except CandidateError:
        if made:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    manifest = bundle.manifest
    return Candidate(folder, bundle, manifest.name, manifest.version, bundle.signed_by)
