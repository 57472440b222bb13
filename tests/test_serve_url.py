"""POST /url: off by default; when on, only public addresses (after name resolution, on every
redirect) unless an allow-list names them; errors never show what was fetched.

The image host is a real HTTP server on 127.0.0.1, which is exactly what the server must refuse
by default; the allow-list 127.0.0.1/32 lets the tests fetch from it.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from edge_agent.predictor import Predictor
from edge_agent.serve import PredictionServer, make_server
from edge_agent.serve.addresses import UrlAllowList, refusal
from edge_agent.serve.fetch import MAX_REDIRECTS
from tests.helpers.http import (
    MAX_BODY_BYTES,
    RED_BOX,
    RED_PNG,
    blank_png,
    call,
    post_json,
    running,
    toy_detector,
)

SECRET = b"aws_secret_access_key=wJalrXUtnFEMI"
REDIRECTS = {
    "/to-red": "/red.png",
    "/to-file": "file:///etc/passwd",
    "/to-ftp": "ftp://127.0.0.1/red.png",
    "/loop": "/loop",
    "/to-metadata": "http://169.254.169.254/latest/meta-data/",
    "/to-other-loopback": "http://127.0.0.2/red.png",
    "/to-mapped": "http://[::ffff:127.0.0.1]:{port}/red.png",
}


class ImageHost(BaseHTTPRequestHandler):
    """The web server /url fetches from; it records the Host header of each request."""

    hosts: list[str] = []  # noqa: RUF012 - shared on purpose: the test reads what was asked

    def do_GET(self) -> None:
        ImageHost.hosts.append(self.headers.get("Host", ""))
        if self.path == "/red.png":
            self._send(200, RED_PNG)
        elif self.path == "/big":
            self._send(200, b"\0" * (MAX_BODY_BYTES + 1))
        elif self.path == "/secret":
            self._send(200, SECRET)
        elif self.path == "/secret-404":
            self._send(404, SECRET)
        elif self.path == "/huge.png":
            self._send(200, blank_png(10000, 10000))  # 100 MP in 0.1 MB
        elif self.path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Length", str(len(RED_PNG)))
            self.end_headers()
            for byte in RED_PNG[:20]:  # a byte every 0.3 s: each read is quick, the whole is not
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.3)
        elif self.path in REDIRECTS:
            self.send_response(302)
            port = self.server.server_address[1]
            self.send_header("Location", REDIRECTS[self.path].format(port=port))
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"no such image")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """The server under test hangs up on answers it refuses (/big): that is expected."""


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    host = QuietServer(("127.0.0.1", 0), ImageHost)
    with running(host):
        yield f"http://127.0.0.1:{host.server_address[1]}"


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Predictor]:
    with toy_detector(tmp_path_factory.mktemp("det")) as predictor:
        yield predictor


def url_server(detector: Predictor, allow: str) -> PredictionServer:
    return make_server(
        detector,
        "127.0.0.1",
        0,
        max_body_bytes=MAX_BODY_BYTES,
        allow_url=True,
        url_allow=allow,
        url_fetch_timeout_s=2.0,
    )


@pytest.fixture(scope="module")
def public_only(detector: Predictor) -> Iterator[PredictionServer]:
    """/url on, no allow-list: what --allow-url alone gives."""
    with running(url_server(detector, "")) as made:
        yield made  # type: ignore[misc]


@pytest.fixture(scope="module")
def server(detector: Predictor) -> Iterator[PredictionServer]:
    """/url on, with --url-allow 127.0.0.1/32 so that the local image host can be reached."""
    with running(url_server(detector, "127.0.0.1/32")) as made:
        yield made  # type: ignore[misc]


def error(answer: tuple[int, Any, Any], status: int, code: str) -> str:
    got_status, body, _ = answer
    assert (got_status, body["error"]["code"]) == (status, code), body
    return str(body["error"]["message"])


# --- on, off ---------------------------------------------------------------------------------


def test_url_is_off_by_default(detector, image_host):
    with running(make_server(detector, "127.0.0.1", 0, url_allow="127.0.0.1/32")) as srv:
        message = error(post_json(srv, "/url", {"url": image_host + "/red.png"}), 403, "Forbidden")
        assert "--allow-url" in message
        assert call(srv, "/image", RED_PNG)[0] == 200


@pytest.mark.parametrize(
    ("path", "key", "image"),
    [
        ("/url", "url", "/red.png"),
        ("/detect/iterations/Iteration3/url", "Url", "/red.png"),  # the cloud API's spelling
        ("/shelf/url/nostore", "url", "/to-red"),  # a redirect to an allowed host is followed
    ],
)
def test_an_allowed_url_is_fetched_and_predicted(server, image_host, path, key, image):
    status, body, _ = post_json(server, path, {key: image_host + image})
    assert status == 200, body
    (pred,) = body["predictions"]
    assert pred["tagName"] == "red" and pred["boundingBox"] == pytest.approx(RED_BOX, abs=1e-3)


# --- which addresses -------------------------------------------------------------------------


def test_loopback_is_refused_without_an_allow_list(public_only, image_host):
    message = error(
        post_json(public_only, "/url", {"url": image_host + "/red.png"}), 403, "Forbidden"
    )
    assert "127.0.0.1 (a loopback address)" in message and "--url-allow" in message


def test_a_name_resolving_to_loopback_is_refused(public_only, image_host):
    url = image_host.replace("127.0.0.1", "localhost") + "/red.png"
    message = error(post_json(public_only, "/url", {"url": url}), 403, "Forbidden")
    assert "localhost resolves to" in message and "loopback" in message


def test_a_name_is_connected_to_by_the_checked_address_with_its_host_header(server, image_host):
    """localhost may also resolve to ::1 (not allowed, and the host does not listen there):
    the fetch goes to 127.0.0.1, the address that passed, and says Host: localhost:<port>."""
    url = image_host.replace("127.0.0.1", "localhost") + "/red.png"
    ImageHost.hosts.clear()
    status, body, _ = post_json(server, "/url", {"url": url})
    assert status == 200, body
    assert ImageHost.hosts == [f"localhost:{image_host.rsplit(':', 1)[1]}"]


def test_an_allow_list_by_host_name(detector, image_host):
    url = image_host.replace("127.0.0.1", "LocalHost") + "/red.png"
    with running(url_server(detector, "localhost")) as srv:
        assert post_json(srv, "/url", {"url": url})[0] == 200
        message = error(post_json(srv, "/url", {"url": image_host + "/red.png"}), 403, "Forbidden")
        assert "127.0.0.1" in message  # the name is allowed, not the address


@pytest.mark.parametrize(
    "host",
    [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "100.64.0.1",  # carrier-grade NAT
        "127.0.0.2",
        "2130706433",  # 127.0.0.1 in decimal
        "0x7f.1",  # and in hex, short form
        "[::1]",
        "[::]",
        "[fe80::1]",
        "[fc00::1]",
        "[ff02::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:169.254.169.254]",
        "[64:ff9b::a9fe:a9fe]",  # NAT64 of 169.254.169.254
        "[2002:a00:1::]",  # 6to4 of 10.0.0.1
    ],
)
def test_non_public_addresses_are_refused_before_connecting(public_only, host):
    message = error(
        post_json(public_only, "/url", {"url": f"http://{host}/x.png"}), 403, "Forbidden"
    )
    assert "refused" in message and "--url-allow" in message


@pytest.mark.parametrize(
    ("redirect", "address"),
    [
        ("/to-metadata", "169.254.169.254"),
        ("/to-other-loopback", "127.0.0.2"),  # loopback, but not the allowed /32
    ],
)
def test_every_redirect_is_checked(server, image_host, redirect, address):
    assert address in error(
        post_json(server, "/url", {"url": image_host + redirect}), 403, "Forbidden"
    )


def test_an_allowed_address_in_ipv6_form_is_allowed(server, image_host):
    """::ffff:127.0.0.1 is 127.0.0.1, which the allow-list names."""
    assert post_json(server, "/url", {"url": image_host + "/to-mapped"})[0] == 200


def test_redirects_are_limited(server, image_host):
    message = error(
        post_json(server, "/url", {"url": image_host + "/loop"}), 400, "BadRequestImageUrl"
    )
    assert f"more than {MAX_REDIRECTS} redirects" in message


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
        ("127.0.0.1", "a loopback address"),
        ("::ffff:10.0.0.1", "a private address inside an IPv6 address"),
        ("169.254.169.254", "a link-local address (cloud metadata services live here)"),
        ("fe80::1", "a link-local address (cloud metadata services live here)"),
        ("198.18.0.1", "a private address"),
    ],
)
def test_refusal(address, why):
    assert refusal(ipaddress.ip_address(address)) == why


def test_allow_list_parsing():
    allow = UrlAllowList.parse(" 10.0.0.0/8, Camera.Local., [::1],fd00::/8 ")
    assert allow.allows("camera.local", ipaddress.ip_address("192.168.1.1"))
    assert allow.allows("x", ipaddress.ip_address("10.9.9.9"))
    assert allow.allows("x", ipaddress.ip_address("::ffff:10.9.9.9"))
    assert allow.allows("x", ipaddress.ip_address("::1"))
    assert allow.allows("x", ipaddress.ip_address("fd12::1"))
    assert not allow.allows("x", ipaddress.ip_address("11.0.0.1"))
    for bad in ("10.0.0.0/33", "http://camera", "a..b", "cam era/x"):
        with pytest.raises(ValueError, match="expected a CIDR"):
            UrlAllowList.parse(bad)


# --- failures say why, and never what was fetched -----------------------------------------------


@pytest.mark.parametrize(
    ("image", "status", "code", "text"),
    [
        ("/missing.png", 400, "BadRequestImageUrl", "HTTP 404 Not Found"),
        ("/to-file", 400, "BadRequestImageUrl", "file:///etc/passwd"),
        ("/to-ftp", 400, "BadRequestImageUrl", "ftp://127.0.0.1/red.png"),
        ("/big", 400, "BadRequestImageSizeBytes", "larger than"),
        ("/huge.png", 400, "BadRequestImageDimensions", "10000x10000"),
    ],
)
def test_fetch_failures_say_why(server, image_host, image, status, code, text):
    assert text in error(post_json(server, "/url", {"url": image_host + image}), status, code)


@pytest.mark.parametrize("image", ["/secret", "/secret-404"])
def test_fetched_bytes_are_not_reflected(server, image_host, image):
    status, body, _ = post_json(server, "/url", {"url": image_host + image})
    assert status == 400, body
    assert b"wJalr" not in str(body).encode() and image in body["error"]["message"]


def test_a_banner_of_a_non_http_service_is_not_reflected(detector):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def banner() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.6 secret-build-42\r\n")
                conn.recv(1024)

        thread = threading.Thread(target=banner, name="test-banner", daemon=True)
        thread.start()
        with running(url_server(detector, "127.0.0.1/32")) as srv:
            url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
            message = error(post_json(srv, "/url", {"url": url}), 400, "BadRequestImageUrl")
        thread.join(5)
    assert "not valid HTTP" in message and "secret" not in message and "SSH" not in message


def test_a_trickling_host_is_given_up_at_the_deadline(server, image_host):
    start = time.monotonic()
    message = error(
        post_json(server, "/url", {"url": image_host + "/trickle"}), 400, "BadRequestImageUrl"
    )
    assert "within 2 s" in message
    assert time.monotonic() - start < 4.0


def test_url_to_a_closed_port_is_400(server):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        message = error(
            post_json(server, "/url", {"url": f"http://127.0.0.1:{port}/x"}),
            400,
            "BadRequestImageUrl",
        )
    assert "refused" in message.lower()


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.png",
        "data:image/png;base64,AAAA",
        "red.png",
        "http://",
    ],
)
def test_url_must_be_http(server, url):
    assert "http" in error(post_json(server, "/url", {"url": url}), 400, "BadRequestInvalidUri")


@pytest.mark.parametrize("data", [b"not json", b'{"link": "http://x/y.png"}', b"[1, 2]"])
def test_url_body_must_be_json_with_a_url(server, data):
    assert '"url"' in error(call(server, "/url", data), 400, "BadRequest")
