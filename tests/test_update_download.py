"""The bundle downloader against a real loopback HTTP(S) server that serves, cuts, trickles,
lies, ignores Range or flips a byte: the pinned bytes arrive, or a DownloadError says why and
leaves nothing behind but the ``.part`` a resume would use."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent.updates.download import DownloadError, DownloadStopped, FetchPolicy, fetch
from tests.helpers.tls import make_pki
from tests.helpers.update_server import serving

BLOB = os.urandom(300_001)
SHA = hashlib.sha256(BLOB).hexdigest()
LOOPBACK = FetchPolicy(allow_http=True, allow_private=True, read_gap_s=5, deadline_s=30)


def policy(**changes: Any) -> FetchPolicy:
    return FetchPolicy(**{**LOOPBACK.__dict__, **changes})


def download(url: str, folder: Path, pol: FetchPolicy = LOOPBACK, **kwargs: Any) -> Path:
    folder.mkdir(exist_ok=True)
    args: dict[str, Any] = {"size": len(BLOB), "sha256": SHA, "policy": pol, **kwargs}
    return fetch(url, folder / "bundle.tar.gz", **args)


def left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_ok_arrives_whole_and_reports_progress(tmp_path: Path) -> None:
    seen: list[int] = []
    with serving(BLOB) as srv:
        out = download(srv.url, tmp_path / "dl", progress=seen.append)
    assert out.read_bytes() == BLOB
    assert left(tmp_path / "dl") == ["bundle.tar.gz"]
    assert srv.requests == 1 and srv.ranges == [None]
    assert seen[-1] == len(BLOB) and seen == sorted(seen)


def test_https_with_pinned_ca_and_untrusted_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    with serving(BLOB, tls=pki.server) as srv:
        trusted = policy(allow_http=False, cafile=str(pki.ca.cert_file))
        assert download(srv.url, tmp_path / "dl", trusted).read_bytes() == BLOB
        untrusted = policy(allow_http=False, cafile=str(pki.other_ca.cert_file))
        with pytest.raises(DownloadError, match=r"TLS certificate of 127\.0\.0\.1 refused"):
            download(srv.url, tmp_path / "dl2", untrusted)
    assert left(tmp_path / "dl2") == []


def test_cut_resumes_with_range(tmp_path: Path) -> None:
    with serving(BLOB, cut_at=100_000) as srv:
        out = download(srv.url, tmp_path / "dl")
    assert out.read_bytes() == BLOB
    assert srv.ranges == [None, "bytes=100000-"]
    assert left(tmp_path / "dl") == ["bundle.tar.gz"]


def test_server_ignoring_range_restarts_from_zero(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "edge_agent.updates.download")
    with serving(BLOB, mode="ignore_range", cut_at=100_000) as srv:
        out = download(srv.url, tmp_path / "dl")
    assert out.read_bytes() == BLOB
    assert srv.ranges == [None, "bytes=100000-"]
    assert "ignored Range bytes=100000-; restarting from byte 0" in caplog.text


def test_206_from_the_wrong_byte_restarts_from_zero(tmp_path: Path) -> None:
    with serving(BLOB, mode="wrong_range", cut_at=100_000) as srv:
        assert download(srv.url, tmp_path / "dl").read_bytes() == BLOB
    assert srv.ranges == [None, "bytes=100000-", None]


def test_redirect_is_followed_and_checked_again(tmp_path: Path) -> None:
    with serving(BLOB) as target, serving(BLOB, redirect_to=target.url) as srv:
        assert download(srv.url, tmp_path / "dl").read_bytes() == BLOB
    assert (srv.requests, target.requests) == (1, 1)
    with (
        serving(BLOB, redirect_to="file:///etc/passwd") as srv,
        pytest.raises(DownloadError, match="redirect to file:///etc/passwd refused"),
    ):
        download(srv.url, tmp_path / "dl2")
    assert left(tmp_path / "dl2") == []


def test_existing_part_is_resumed(tmp_path: Path) -> None:
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "bundle.tar.gz.part").write_bytes(BLOB[:12345])
    with serving(BLOB) as srv:
        assert download(srv.url, tmp_path / "dl").read_bytes() == BLOB
    assert srv.ranges == ["bytes=12345-"]


def test_wrong_bytes_in_a_part_are_caught_by_the_hash(tmp_path: Path) -> None:
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "bundle.tar.gz.part").write_bytes(b"x" * 500)
    with (
        serving(BLOB) as srv,
        pytest.raises(DownloadError, match=f"does not match the expected {SHA}"),
    ):
        download(srv.url, tmp_path / "dl")
    assert left(tmp_path / "dl") == []


def test_read_gap_fails_and_keeps_the_part(tmp_path: Path) -> None:
    with (
        serving(BLOB, mode="trickle", trickle_s=1.0) as srv,
        pytest.raises(DownloadError, match=r"no data for 0.3 s at byte \d+ \(after 2 attempts\)"),
    ):
        download(srv.url, tmp_path / "dl", policy(read_gap_s=0.3, retries=1))
    assert srv.requests == 2
    assert left(tmp_path / "dl") == ["bundle.tar.gz.part"]  # what a later resume starts from


def test_trickle_ends_at_the_deadline(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with (
        serving(BLOB, mode="trickle", trickle_s=0.05) as srv,
        pytest.raises(DownloadError, match=r"not done within the 1 s deadline .*trickling"),
    ):
        download(srv.url, tmp_path / "dl", policy(deadline_s=1))
    assert time.monotonic() - t0 < 3
    assert srv.requests == 1


@pytest.mark.parametrize("lie_by", [1000, -1000])
def test_lying_content_length_is_refused(tmp_path: Path, lie_by: int) -> None:
    with (
        serving(BLOB, mode="lie", lie_by=lie_by) as srv,
        pytest.raises(
            DownloadError, match=f"Content-Length {len(BLOB) + lie_by}, expected {len(BLOB)}"
        ),
    ):
        download(srv.url, tmp_path / "dl")
    assert srv.requests == 1  # not retried: the server is wrong, not the network
    assert not (tmp_path / "dl" / "bundle.tar.gz").exists()


def test_more_bytes_than_announced_is_an_error(tmp_path: Path) -> None:
    short = len(BLOB) - 10
    with (
        serving(BLOB, mode="no_length") as srv,
        pytest.raises(DownloadError, match=f"server sent more than the {short} bytes announced"),
    ):
        fetch(srv.url, tmp_path / "b", size=short, sha256=SHA, policy=LOOPBACK)
    assert left(tmp_path) == []


def test_substituted_byte_fails_the_hash(tmp_path: Path) -> None:
    with (
        serving(BLOB, mode="substitute") as srv,
        pytest.raises(DownloadError, match=f"does not match the expected {SHA}"),
    ):
        download(srv.url, tmp_path / "dl")
    assert left(tmp_path / "dl") == []


def test_not_found_is_not_retried_and_masks_the_password(tmp_path: Path) -> None:
    with serving(BLOB, mode="not_found") as srv:
        url = srv.url.replace("http://", "http://fleet:s3cret@")
        with pytest.raises(DownloadError, match="HTTP 404 Not Found, expected 200") as err:
            download(url, tmp_path / "dl")
    assert "s3cret" not in str(err.value) and "fleet:***@127.0.0.1" in str(err.value)
    assert srv.requests == 1


@pytest.mark.parametrize(
    ("pol", "host", "match"),
    [
        (policy(max_bytes=1000), "127.0.0.1", "300001 bytes announced, over the 1000 allowed"),
        (policy(allow_private=False), "127.0.0.1", "resolves to 127.0.0.1, not a public"),
        (policy(allow_private=False), "localhost", "localhost resolves to .*refused"),
        (policy(allow_http=False), "127.0.0.1", "scheme 'http' refused.*http is not allowed"),
    ],
)
def test_refused_before_connecting(tmp_path: Path, pol: FetchPolicy, host: str, match: str) -> None:
    with serving(BLOB) as srv, pytest.raises(DownloadError, match=match):
        download(srv.url.replace("127.0.0.1", host), tmp_path / "dl", pol)
    assert srv.requests == 0
    assert left(tmp_path / "dl") == []


@pytest.mark.parametrize(
    "host",
    ["10.1.2.3", "192.168.1.20", "172.16.0.9", "169.254.169.254", "100.64.0.1", "0.0.0.0",
     "224.0.0.251", "[::1]", "[fe80::1]", "[fd00::5]", "[::ffff:192.168.1.1]"],
)  # fmt: skip
def test_non_public_addresses_are_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(DownloadError, match="not a public unicast address"):
        download(
            f"http://{host}:9/b", tmp_path, policy(allow_private=False, read_gap_s=1, retries=0)
        )
    assert left(tmp_path) == []


def test_not_enough_free_disk_is_refused(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    with serving(BLOB) as srv, pytest.raises(DownloadError, match="not enough free disk in"):
        fetch(srv.url, tmp_path / "b", size=free + 1, sha256=SHA, policy=policy(max_bytes=2**62))
    assert srv.requests == 0
    assert left(tmp_path) == []


FULL_DISK_CHILD = """
import resource, signal, sys
from pathlib import Path
from edge_agent.updates.download import DownloadError, FetchPolicy, fetch
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
url, dest, size, sha = sys.argv[1:]
try:
    fetch(url, Path(dest), size=int(size), sha256=sha,
          policy=FetchPolicy(allow_http=True, allow_private=True, read_gap_s=5))
except DownloadError as exc:
    print(exc)
"""


def test_a_write_failing_mid_download_is_a_download_error(tmp_path: Path) -> None:
    """RLIMIT_FSIZE stands in for a disk filling up while the download runs (as ENOSPC would,
    the write fails): the error names the part file and the part is removed to free space."""
    dest = tmp_path / "bundle.tar.gz"
    with serving(BLOB) as srv:
        child = subprocess.run(
            [sys.executable, "-c", FULL_DISK_CHILD, srv.url, str(dest), str(len(BLOB)), SHA],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
        )  # fmt: skip
    assert child.returncode == 0, child.stderr
    assert f"cannot write {dest}.part: File too large" in child.stdout
    assert left(tmp_path) == []


def test_stop_aborts_a_blocked_read_promptly(tmp_path: Path) -> None:
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    t0 = time.monotonic()
    with (
        serving(BLOB, mode="trickle", trickle_s=10) as srv,
        pytest.raises(DownloadStopped, match="stopped"),
    ):
        download(srv.url, tmp_path / "dl", policy(read_gap_s=30), stop=stop)
    assert time.monotonic() - t0 < 2
    assert srv.requests == 1


def test_file_url(tmp_path: Path) -> None:
    src = tmp_path / "src.tar.gz"
    src.write_bytes(BLOB)
    assert download(src.as_uri(), tmp_path / "dl", FetchPolicy()).read_bytes() == BLOB
    with pytest.raises(DownloadError, match="the file sent more than the 300000 bytes"):
        fetch(src.as_uri(), tmp_path / "dl" / "b", size=300_000, sha256=SHA, policy=FetchPolicy())
    with pytest.raises(DownloadError, match=r"cannot read .*missing"):
        download((tmp_path / "missing").as_uri(), tmp_path / "dl2", FetchPolicy())
    assert left(tmp_path / "dl") == ["bundle.tar.gz"] and left(tmp_path / "dl2") == []


def test_malformed_arguments_are_caller_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="64 lowercase hex digits"):
        fetch("https://x/b", tmp_path / "b", size=1, sha256="ABC", policy=FetchPolicy())
    with pytest.raises(ValueError, match="positive byte count"):
        fetch("https://x/b", tmp_path / "b", size=0, sha256=SHA, policy=FetchPolicy())
