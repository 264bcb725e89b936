"""Fetching an image URL without becoming a proxy into private networks (no SSRF).

Only http and https; every address the host resolves to must be public, and the connection goes to
the address that was checked (no second DNS lookup that could be rebound); every redirect hop is
checked again, at most MAX_REDIRECTS; the URL's length is capped before anything is sent and
messages echo it shortened; the body is capped while it streams, under connect and read time limits
and a total deadline that runs from the first byte sent, headers included; it must decode as an
image.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3
from PIL import Image

from pipeline import __version__
from pipeline.errors import AiicError
from pipeline.images import UnreadableImage, decode

ALLOW_PRIVATE_ENV = "AIIC_ALLOW_PRIVATE_URLS"  # for local testing only; off by default
MAX_REDIRECTS = 5
MAX_BYTES = 20 * 1024 * 1024
CONNECT_TIMEOUT, READ_TIMEOUT, TOTAL_TIMEOUT = 5.0, 10.0, 30.0
MAX_URL_LENGTH = 2048  # what browsers and sitemaps expect to work; longer ones are refused unsent
ECHOED_URL_LENGTH = 120  # how much of a URL a message repeats
USER_AGENT = f"ai-image-classifier/{__version__}"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchRefused(AiicError, ValueError):
    """The URL was not fetched, or its body was not used; the message says why."""


def shorten(url: str, limit: int = ECHOED_URL_LENGTH) -> str:
    """`url` as a message may echo it: at most `limit` characters, an ellipsis marking a cut."""
    return url if len(url) <= limit else f"{url[: limit - 1]}…"


def is_public(address: Address) -> bool:
    """False for loopback, private, link-local (cloud metadata), multicast, reserved, unspecified.

    An IPv4-mapped IPv6 address (::ffff:127.0.0.1) is judged as the IPv4 address it carries.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def allow_private_from_env() -> bool:
    return os.environ.get(ALLOW_PRIVATE_ENV, "") in ("1", "true", "yes")


def resolve(host: str, port: int, allowed: Callable[[Address], bool]) -> Address:
    """The first address of `host`, after checking that every address it resolves to is allowed.

    getaddrinfo also normalises decimal, octal and hex spellings such as 2130706433 or 0x7f.1.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise FetchRefused(f"cannot resolve host {host!r}: {error.strerror}") from error
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    for address in addresses:
        if not allowed(address):
            raise FetchRefused(
                f"refused: {host!r} resolves to {address}, a non-public address "
                "(loopback, private, link-local, multicast, reserved or unspecified)"
            )
    return addresses[0]


@dataclass
class Fetched:
    url: str  # after redirects
    content_type: str
    body: bytes


class Deadline:
    """Shuts down, at the deadline, the sockets of the connections opened under it.

    urllib3's read timeout applies to each socket read, so a server that sends a header byte
    every second never trips it; shutting the socket down ends the blocked read wherever it is
    (status line, headers or body), and `passed` tells that failure from the server's own.
    """

    def __init__(self, seconds: float) -> None:
        self.passed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            self.passed = True
            for sock in self._sockets:
                with contextlib.suppress(OSError):  # already closed by the fetch itself
                    sock.shutdown(socket.SHUT_RDWR)

    def watch(self, pool: urllib3.HTTPConnectionPool) -> None:
        """Make `pool`'s new connections register their socket here once connected."""
        deadline, base = self, pool.ConnectionCls

        class Watched(base):
            def connect(self) -> None:
                super().connect()
                with deadline._lock:
                    deadline._sockets.append(self.sock)
                    if deadline.passed:
                        self.sock.shutdown(socket.SHUT_RDWR)

        pool.ConnectionCls = Watched

    def cancel(self) -> None:
        self._timer.cancel()


def _connection_pool(
    scheme: str, host: str, address: Address, port: int
) -> urllib3.HTTPConnectionPool:
    timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT)
    if scheme == "https":
        # Connect to the checked address; SNI and certificate checks still use the host name.
        return urllib3.HTTPSConnectionPool(
            str(address),
            port,
            timeout=timeout,
            retries=False,
            server_hostname=host,
            assert_hostname=host,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
        )
    return urllib3.HTTPConnectionPool(str(address), port, timeout=timeout, retries=False)


def _read_capped(response: urllib3.BaseHTTPResponse, max_bytes: int) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise FetchRefused(f"refused: the body is {int(declared)} bytes, over {max_bytes}")
    chunks, size = [], 0
    while chunk := response.read1(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise FetchRefused(f"refused: the body is over {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def fetch(
    url: str,
    allowed: Callable[[Address], bool] | None = None,
    max_bytes: int | None = None,
) -> Fetched:
    """GET `url` safely; `allowed` defaults to public addresses only (see ALLOW_PRIVATE_ENV)."""
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    if allowed is None:
        allowed = (lambda address: True) if allow_private_from_env() else is_public
    if len(url) > MAX_URL_LENGTH:
        raise FetchRefused(
            f"refused: the URL is {len(url)} characters long, over {MAX_URL_LENGTH}"
            f" ({shorten(url)!r})"
        )
    deadline = Deadline(TOTAL_TIMEOUT)
    try:
        return _follow(url, allowed, max_bytes, deadline)
    except (FetchRefused, urllib3.exceptions.HTTPError, OSError) as error:
        if deadline.passed:
            raise FetchRefused(
                f"refused: {shorten(url)} took over {TOTAL_TIMEOUT:g} s to download"
            ) from error
        if isinstance(error, FetchRefused):
            raise
        raise FetchRefused(f"could not fetch {shorten(url)}: {error}") from error
    finally:
        deadline.cancel()


def _follow(
    url: str, allowed: Callable[[Address], bool], max_bytes: int, deadline: Deadline
) -> Fetched:
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchRefused(
                f"refused: only http and https URLs are fetched, not {shorten(url)!r}"
            )
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            address = resolve(parts.hostname, port, allowed)
        except FetchRefused:
            raise
        except (ValueError, UnicodeError) as error:
            raise FetchRefused(f"refused: {shorten(url)!r} is not a valid URL ({error})") from error
        pool = _connection_pool(parts.scheme, parts.hostname, address, port)
        deadline.watch(pool)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "User-Agent": USER_AGENT}
        try:
            response = pool.urlopen(
                "GET", target, headers=headers, redirect=False, preload_content=False
            )
            try:
                if response.status in (301, 302, 303, 307, 308):
                    url = urljoin(url, response.headers.get("Location", ""))
                    if len(url) > MAX_URL_LENGTH:
                        raise FetchRefused(f"refused: a redirect to a URL over {MAX_URL_LENGTH}")
                    continue
                if response.status != 200:
                    raise FetchRefused(f"{shorten(url)} answered HTTP {response.status}")
                body = _read_capped(response, max_bytes)
                if deadline.passed:  # the shut-down socket may read as a short, clean end
                    raise FetchRefused("the deadline passed while the body arrived")
                return Fetched(url, response.headers.get("Content-Type", ""), body)
            finally:
                response.release_conn()
        finally:
            pool.close()
    raise FetchRefused(f"refused: more than {MAX_REDIRECTS} redirects")


def fetch_image(url: str, allowed: Callable[[Address], bool] | None = None) -> Image.Image:
    """The decoded image at `url`; FetchRefused when it is unsafe, too big or not an image."""
    fetched = fetch(url, allowed)
    try:
        return decode(fetched.body)
    except UnreadableImage as error:
        raise FetchRefused(
            f"refused: {shorten(url)} is not a usable image ({error.reason})"
        ) from error
