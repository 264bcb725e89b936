"""Fetching an image URL without becoming a proxy into private networks (no SSRF).

Only http and https; every address the host resolves to must be public (is_public: an IPv6
address that embeds an IPv4 address is judged by that IPv4 address too), and the connection goes
to the address that was checked (no second DNS lookup that could be rebound); every redirect hop
is checked again, at most MAX_REDIRECTS; a URL or redirect that does not parse is refused with its
reason; the URL's length is capped before anything is sent and messages echo it shortened; the
body is capped while it streams, under connect and read time limits and a total deadline that
runs from the first byte sent, headers included (and, where the caller gives one, a deadline
shared by several fetches, which the caller may also end early); it must decode as an image.
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
from pipeline.core.errors import AiicError
from pipeline.data.images import UnreadableImage, decode

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


# Special-purpose ranges that the IANA registries mark not globally reachable (or deprecated) but
# that `is_global` calls global in Pythons before the CVE-2024-4032 fix (3.10.15, 3.11.10, 3.12.4)
# or in all of them. Judged here so that every supported Python refuses the same addresses.
# https://www.iana.org/assignments/iana-ipv4-special-registry/
# https://www.iana.org/assignments/iana-ipv6-special-registry/
NOT_GLOBAL = tuple(
    ipaddress.ip_network(network)
    for network in (
        "192.0.0.0/24",  # IETF protocol assignments, 192.0.0.8 the IPv4 dummy address (RFC 7600)
        "192.88.99.0/24",  # 6to4 relay anycast, deprecated (RFC 7526)
        "64:ff9b:1::/48",  # local-use IPv4/IPv6 translation (RFC 8215): the operator's own NAT64
        "fec0::/10",  # site-local, deprecated (RFC 3879)
        "5f00::/16",  # segment routing SIDs (RFC 9602)
        "3fff::/20",  # documentation (RFC 9637)
    )
)
# IPv6 ranges whose last 32 bits are an IPv4 address that a gateway may deliver to: IPv4-compatible
# (deprecated, RFC 4291 2.5.5.1), IPv4-translated (RFC 2765 / SIIT) and the NAT64 well-known
# prefix (RFC 6052 2.1). IPv4-mapped (RFC 4291 2.5.5.2), 6to4 (RFC 3056) and Teredo (RFC 4380) are
# read by ipaddress itself (ipv4_mapped, sixtofour, teredo).
LAST_32_BITS_IPV4 = tuple(
    ipaddress.ip_network(network) for network in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96")
)


def embedded_ipv4(address: Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries, which a NAT64, 6to4 or Teredo gateway (or a
    dual-stack host) would connect to. OWASP's SSRF prevention cheat sheet has every A and AAAA
    record checked against the IANA special-purpose ranges; an IPv6 spelling of a refused IPv4
    address would slip past that, so it is judged as that IPv4 address too. Teredo carries two,
    its server's and its client's (RFC 4380 4)."""
    if isinstance(address, ipaddress.IPv4Address):
        return ()
    if address.ipv4_mapped:
        return (address.ipv4_mapped,)
    if address.sixtofour:
        return (address.sixtofour,)
    if address.teredo:
        return address.teredo
    if any(address in network for network in LAST_32_BITS_IPV4):
        return (ipaddress.IPv4Address(address.packed[-4:]),)
    return ()


def _is_public_itself(address: Address) -> bool:
    return (
        address.is_global
        and not address.is_multicast
        and not any(address in network for network in NOT_GLOBAL)
    )


def is_public(address: Address) -> bool:
    """False for loopback, private, link-local (cloud metadata), multicast, reserved, unspecified,
    deprecated and other special-purpose addresses that are not globally reachable, and for an
    IPv6 address that embeds such an IPv4 address (::ffff:127.0.0.1, ::7f00:1, 64:ff9b::7f00:1,
    2002:7f00:1::1, a Teredo address whose server or client is private)."""
    return all(map(_is_public_itself, (address, *embedded_ipv4(address))))


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
            inside = [str(v4) for v4 in embedded_ipv4(address) if not _is_public_itself(v4)]
            which = f", which embeds {inside[0]}," if inside else ","
            raise FetchRefused(
                f"refused: {host!r} resolves to {address}{which} a non-public address "
                "(loopback, private, link-local, multicast, reserved, unspecified or another "
                "special-purpose range)"
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
    `expire()` ends it early (a caller whose client has gone); `why` completes the refusal's
    message ("{url} took over 30 s to download").
    """

    def __init__(self, seconds: float, why: str) -> None:
        self.passed, self.why = False, why
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self.expire)
        self._timer.daemon = True
        self._timer.start()

    def expire(self) -> None:
        self._timer.cancel()
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
    """The body, refused once it passes `max_bytes`. read1() returns what one read of the socket
    gave (urllib3 added it in 2.2); from 2.6, a read of `amt` bytes decompresses at most about
    `amt` (GHSA-2xpw-w6gg-jr37), so a compressed bomb is refused at the cap with little memory
    spent: pyproject's floor (urllib3's CHANGES.rst)."""
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
    shared: Deadline | None = None,
) -> Fetched:
    """GET `url` safely; `allowed` defaults to public addresses only (see ALLOW_PRIVATE_ENV).
    `shared`: a deadline of the caller's, over this fetch and others, besides TOTAL_TIMEOUT's."""
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    if allowed is None:
        allowed = (lambda address: True) if allow_private_from_env() else is_public
    if len(url) > MAX_URL_LENGTH:
        raise FetchRefused(
            f"refused: the URL is {len(url)} characters long, over {MAX_URL_LENGTH}"
            f" ({shorten(url)!r})"
        )
    own = Deadline(TOTAL_TIMEOUT, f"took over {TOTAL_TIMEOUT:g} s to download")
    deadlines = [own, *([shared] if shared else [])]
    try:
        if shared and shared.passed:
            raise FetchRefused("the shared deadline passed before the fetch began")
        return _follow(url, allowed, max_bytes, deadlines)
    # ValueError: what http.client and urllib3 raise for a URL they cannot send
    except (FetchRefused, urllib3.exceptions.HTTPError, OSError, ValueError) as error:
        passed = next((deadline for deadline in deadlines if deadline.passed), None)
        if passed:
            raise FetchRefused(f"refused: {shorten(url)} {passed.why}") from error
        if isinstance(error, FetchRefused):
            raise
        raise FetchRefused(f"could not fetch {shorten(url)}: {error}") from error
    finally:
        own.cancel()


def _parse(url: str) -> tuple[str, str, int, str, str]:
    """(scheme, host, port, request target, Host header) of an http or https URL; FetchRefused
    for any other scheme and for what urlsplit cannot parse (`http://[::1`, a bad port)."""
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme, parts.hostname, parts.port
    except ValueError as error:
        raise FetchRefused(f"refused: {shorten(url)!r} is not a valid URL ({error})") from error
    if scheme not in ("http", "https") or not host:
        raise FetchRefused(f"refused: only http and https URLs are fetched, not {shorten(url)!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, host, port or (443 if scheme == "https" else 80), target, parts.netloc


def _follow(
    url: str, allowed: Callable[[Address], bool], max_bytes: int, deadlines: list[Deadline]
) -> Fetched:
    for _ in range(MAX_REDIRECTS + 1):
        scheme, host, port, target, netloc = _parse(url)
        try:
            address = resolve(host, port, allowed)
        except FetchRefused:
            raise
        except (ValueError, UnicodeError) as error:
            raise FetchRefused(f"refused: {shorten(url)!r} is not a valid URL ({error})") from error
        pool = _connection_pool(scheme, host, address, port)
        for deadline in deadlines:
            deadline.watch(pool)
        headers = {"Host": netloc.rsplit("@", 1)[-1], "User-Agent": USER_AGENT}
        try:
            response = pool.urlopen(
                "GET", target, headers=headers, redirect=False, preload_content=False
            )
            try:
                if response.status in (301, 302, 303, 307, 308):
                    url = _redirect(url, response.headers.get("Location", ""))
                    if len(url) > MAX_URL_LENGTH:
                        raise FetchRefused(f"refused: a redirect to a URL over {MAX_URL_LENGTH}")
                    continue
                if response.status != 200:
                    raise FetchRefused(f"{shorten(url)} answered HTTP {response.status}")
                body = _read_capped(response, max_bytes)
                if any(deadline.passed for deadline in deadlines):  # a shut-down socket may
                    # read as a short, clean end
                    raise FetchRefused("the deadline passed while the body arrived")
                return Fetched(url, response.headers.get("Content-Type", ""), body)
            finally:
                response.release_conn()
        finally:
            pool.close()
    raise FetchRefused(f"refused: more than {MAX_REDIRECTS} redirects")


def _redirect(url: str, location: str) -> str:
    """The URL a redirect's Location names, relative to `url`; FetchRefused where urljoin cannot
    read it (a host's malformed Location is the host's failure, not the server's)."""
    try:
        return urljoin(url, location)
    except ValueError as error:
        raise FetchRefused(
            f"refused: {shorten(url)} redirects to an invalid URL {shorten(location)!r} ({error})"
        ) from error


def decode_fetched(url: str, body: bytes) -> Image.Image:
    """The fetched `body` of `url` decoded; FetchRefused, naming the URL, when it is no image."""
    try:
        return decode(body)
    except UnreadableImage as error:
        raise FetchRefused(
            f"refused: {shorten(url)} is not a usable image ({error.reason})"
        ) from error


def fetch_image(url: str, allowed: Callable[[Address], bool] | None = None) -> Image.Image:
    """The decoded image at `url`; FetchRefused when it is unsafe, too big or not an image."""
    return decode_fetched(url, fetch(url, allowed).body)
