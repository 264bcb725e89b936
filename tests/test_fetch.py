"""SSRF catalogue: every address form refused by default; hop, size, time and content limits."""

import contextlib
import gzip
import http.server
import io
import ipaddress
import threading
import time

import pytest
from PIL import Image

from pipeline.serving import fetch as fetch_module
from pipeline.serving.fetch import FetchRefused, fetch_image, is_public

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
            # Locations urljoin cannot read: the host's failure, refused with a reason
            "/to-broken-ipv6": lambda: self.send(302, headers=[("Location", "http://[::1")]),
            "/to-bad-port": lambda: self.send(302, headers=[("Location", "http://a:99999/")]),
        }
        if self.path == "/gzip-bomb":  # 64 KB on the wire that inflate to 64 MB of zeros
            body = gzip.compress(b"\0" * 64 * 2**20, compresslevel=9)
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path == "/declared-big":  # refused on the header, before the body is read
            self.send_response(200)
            self.send_header("Content-Length", "50000000")
            self.end_headers()
            return
        if self.path == "/streamed-big":  # no Content-Length: the cap must hold while streaming
            self.send_response(200)
            self.end_headers()
            with contextlib.suppress(OSError):  # the client hangs up at its cap, as it should
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


@pytest.fixture
def unconnected(monkeypatch):
    """No connection may be opened: a refusal must come from the checks alone."""

    def no_connection(*args, **kwargs):
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(fetch_module, "_connection_pool", no_connection)


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
def test_non_public_addresses_are_refused_before_connecting(url, unconnected):
    with pytest.raises(FetchRefused, match="non-public address"):
        fetch_image(url)


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.org/a.png", "gopher://x/", "x.png"]
)
def test_only_http_and_https(url):
    with pytest.raises(FetchRefused, match="only http and https"):
        fetch_image(url)


# Each form of an IPv6 address that carries an IPv4 address a gateway would deliver to, and the
# special-purpose ranges that are not globally reachable although some Pythons' is_global says so.
EMBEDDED_FORMS = [
    ("::ffff:127.0.0.1", "127.0.0.1"),  # IPv4-mapped (RFC 4291 2.5.5.2)
    ("::7f00:1", "127.0.0.1"),  # IPv4-compatible, deprecated (RFC 4291 2.5.5.1)
    ("::ffff:0:7f00:1", "127.0.0.1"),  # IPv4-translated (RFC 2765)
    ("64:ff9b::7f00:1", "127.0.0.1"),  # NAT64 well-known prefix (RFC 6052 2.1)
    ("64:ff9b::a9fe:a9fe", "169.254.169.254"),  # NAT64 to the cloud metadata address
    ("2002:7f00:1::1", "127.0.0.1"),  # 6to4 (RFC 3056 2)
    ("2002:a9fe:a9fe::1", "169.254.169.254"),
    ("2002:a00:1::1", "10.0.0.1"),
    # Teredo (RFC 4380 4): server 65.54.227.120, client 127.0.0.1 stored inverted (80ff:fffe)
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),
    ("2001:0:a00:1:8000:63bf:3fff:fdd2", "10.0.0.1"),  # a private Teredo server
]
NOT_GLOBAL_FORMS = [
    "64:ff9b:1::1",  # local-use NAT64 (RFC 8215)
    "64:ff9b:1:7f00:1::",  # the same /48 with 127.0.0.1 where a /48 prefix puts it (RFC 6052 2.2)
    "fec0::1",  # site-local, deprecated (RFC 3879)
    "192.0.0.8",  # the IPv4 dummy address (RFC 7600)
    "192.0.0.170",  # NAT64 discovery (RFC 7050)
    "192.88.99.1",  # 6to4 relay anycast, deprecated (RFC 7526)
]


def host_of(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@pytest.mark.parametrize(("address", "embedded"), EMBEDDED_FORMS)
def test_an_embedded_private_ipv4_address_is_refused_with_its_name(address, embedded, unconnected):
    assert not is_public(ipaddress.ip_address(address))
    with pytest.raises(FetchRefused, match=f"which embeds {embedded}, a non-public address"):
        fetch_image(f"http://{host_of(address)}/x.png")


@pytest.mark.parametrize("address", NOT_GLOBAL_FORMS)
def test_special_purpose_ranges_that_are_not_global_are_refused(address, unconnected):
    assert not is_public(ipaddress.ip_address(address))
    with pytest.raises(FetchRefused, match=f"resolves to {address}, a non-public address"):
        fetch_image(f"http://{host_of(address)}/x.png")


@pytest.mark.parametrize(
    "url",
    ["http://[::1", "http://a]b:80/", "http://example.org:99999/", "http://e:x/"],
)
def test_a_url_that_does_not_parse_is_refused_with_a_reason(url, monkeypatch):
    monkeypatch.setattr(fetch_module, "resolve", lambda *a: pytest.fail("an invalid URL resolved"))
    with pytest.raises(FetchRefused, match="is not a valid URL"):
        fetch_image(url)


def test_public_addresses_are_allowed():
    for address in ("8.8.8.8", "::ffff:8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808"):
        assert is_public(ipaddress.ip_address(address)), address
    assert is_public(ipaddress.ip_address("2002:808:808::1"))  # 6to4 of a public address


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
        ("/to-broken-ipv6", "redirects to an invalid URL 'http://\\[::1'"),
        ("/to-bad-port", "is not a valid URL"),
        ("/gzip-bomb", "over 1000000 bytes"),  # counted as it inflates, not after
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


def test_a_shared_deadline_ends_every_fetch_under_it_early(server):
    """A caller's deadline over several fetches (aiic serve's per request): expiring it, as when
    the client has gone, ends a download that is trickling in at once, with the caller's why."""
    shared = fetch_module.Deadline(60, "was cut off: the client went away")
    threading.Timer(0.3, shared.expire).start()
    started = time.monotonic()
    with pytest.raises(FetchRefused, match="trickle-body was cut off: the client went away"):
        fetch_module.fetch(f"{server}/trickle-body", allowed=only_test_server, shared=shared)
    assert time.monotonic() - started < 1.5
    with pytest.raises(FetchRefused, match="was cut off"):  # once passed, nothing is sent
        fetch_module.fetch(f"{server}/image.png", allowed=only_test_server, shared=shared)


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
