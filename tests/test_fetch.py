"""SSRF catalogue: every address form refused by default; hop, size, time and content limits."""

import http.server
import io
import ipaddress
import threading
import time

import pytest
from PIL import Image

from pipeline import fetch as fetch_module
from pipeline.fetch import FetchRefused, fetch_image, is_public

LOOPBACK = ipaddress.ip_address("127.0.0.1")


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), "green").save(buffer, format="PNG")
    return buffer.getvalue()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, status, body=b"", content_type="image/png", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in headers:
            self.send_header(name, value)
        if status == 200:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        port = self.server.server_address[1]
        routes = {
            "/image.png": lambda: self.send(200, png()),
            "/page.jpg": lambda: self.send(200, b"<html>login</html>", "image/jpeg"),
            "/to-image": lambda: self.send(302, headers=[("Location", "/image.png")]),
            "/to-private": lambda: self.send(
                302, headers=[("Location", f"http://127.0.0.2:{port}/image.png")]
            ),
            "/to-metadata": lambda: self.send(
                307, headers=[("Location", "http://169.254.169.254/latest/meta-data/")]
            ),
            "/loop": lambda: self.send(302, headers=[("Location", "/loop")]),
        }
        if self.path == "/declared-big":  # refused on the header, before the body is read
            self.send_response(200)
            self.send_header("Content-Length", "50000000")
            self.end_headers()
            return
        if self.path == "/streamed-big":  # no Content-Length: the cap must hold while streaming
            self.send_response(200)
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"\0" * 65536)
            return
        if self.path in ("/trickle-headers", "/trickle-body"):  # a byte a tenth of a second
            head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Pad: " + b"a" * 200
            body = b""
            if self.path == "/trickle-body":
                head, body = b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n", b"\0" * 200
            try:
                for byte in [*(head[:-1] if body else head), *body]:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:  # the client hung up: what the deadline is for
                pass
            return
        if self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"\0" * 10)
            self.wfile.flush()
            time.sleep(3)
            return
        routes.get(self.path, lambda: self.send(404, b"", "text/plain"))()


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def only_test_server(address):
    """Treat the test server's 127.0.0.1 as if it were a public host, and nothing else."""
    return address == LOOPBACK


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost/",
        "http://2130706433/",  # decimal 127.0.0.1
        "http://0177.0.0.1/",  # octal
        "http://0x7f.0.0.1/",  # hex
        "http://0x7f000001/",
        "http://127.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
        "http://[::ffff:a9fe:a9fe]/",  # mapped 169.254.169.254
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "http://[fe80::1]/",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://[fd00::1]/",  # unique local IPv6
        "http://224.0.0.1/",  # multicast
        "http://[ff02::1]/",
        "http://240.0.0.1/",  # reserved
        "http://0.0.0.0/",  # unspecified
        "http://[::]/",
        "https://127.0.0.1:8443/x.png",
        "http://user:pass@127.0.0.1/",
    ],
)
def test_non_public_addresses_are_refused_before_connecting(url, monkeypatch):
    def no_connection(*args, **kwargs):
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(fetch_module, "_connection_pool", no_connection)
    with pytest.raises(FetchRefused, match="non-public address"):
        fetch_image(url)


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.org/a.png", "gopher://x/", "x.png"]
)
def test_only_http_and_https(url):
    with pytest.raises(FetchRefused, match="only http and https"):
        fetch_image(url)


def test_public_addresses_are_allowed():
    assert is_public(ipaddress.ip_address("8.8.8.8"))
    assert is_public(ipaddress.ip_address("::ffff:8.8.8.8"))
    assert is_public(ipaddress.ip_address("2606:4700:4700::1111"))


def test_an_allowed_host_serves_an_image_and_its_redirects_are_followed(server):
    assert fetch_image(f"{server}/image.png", allowed=only_test_server).size == (40, 40)
    assert fetch_image(f"{server}/to-image", allowed=only_test_server).size == (40, 40)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/to-private", "127.0.0.2, a non-public address"),  # every hop is checked again
        ("/to-metadata", "169.254.169.254, a non-public address"),
        ("/loop", "more than 5 redirects"),
        ("/page.jpg", "not a usable image"),
        ("/streamed-big", "over 1000000 bytes"),
        ("/declared-big", "50000000 bytes, over 1000000"),
        ("/missing", "HTTP 404"),
    ],
)
def test_refusals_from_an_allowed_host(server, path, reason, monkeypatch):
    monkeypatch.setattr(fetch_module, "MAX_BYTES", 1_000_000)
    with pytest.raises(FetchRefused, match=reason):
        fetch_image(server + path, allowed=only_test_server)


def test_a_slow_body_times_out(server, monkeypatch):
    monkeypatch.setattr(fetch_module, "READ_TIMEOUT", 0.5)
    started = time.monotonic()
    with pytest.raises(FetchRefused, match="could not fetch"):
        fetch_image(f"{server}/slow", allowed=only_test_server)
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("path", ["/trickle-headers", "/trickle-body"])
def test_the_total_deadline_holds_while_headers_or_body_trickle_in(server, path, monkeypatch):
    """Each byte arrives well within the read timeout: only a total deadline, running from the
    first byte sent, ends the fetch."""
    monkeypatch.setattr(fetch_module, "TOTAL_TIMEOUT", 1.0)
    started = time.monotonic()
    with pytest.raises(FetchRefused, match="took over 1 s"):
        fetch_image(server + path, allowed=only_test_server)
    assert time.monotonic() - started < 2.0


def test_a_huge_url_is_refused_unsent_and_echoed_short(monkeypatch):
    monkeypatch.setattr(
        fetch_module, "resolve", lambda *args: pytest.fail("a too-long URL was resolved")
    )
    url = "http://example.org/" + "a" * 100_000
    with pytest.raises(FetchRefused, match="over 2048") as refused:
        fetch_image(url)
    assert len(str(refused.value)) < 300


def test_a_long_refused_url_is_echoed_short():
    with pytest.raises(FetchRefused) as refused:
        fetch_image("ftp://example.org/" + "b" * 2000)
    assert "…" in str(refused.value) and len(str(refused.value)) < 300


def test_the_private_address_setting_allows_local_testing(server, monkeypatch):
    with pytest.raises(FetchRefused):
        fetch_image(f"{server}/image.png")
    monkeypatch.setenv("AIIC_ALLOW_PRIVATE_URLS", "1")
    assert fetch_image(f"{server}/image.png").size == (40, 40)
