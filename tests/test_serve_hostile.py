"""The catalogue of hostile and faulty requests of issue 29, against `aiic serve` in its own
process on 127.0.0.1 (the server's log in a file), so that its figures stay true: no 5xx from any
body, URL or redirect; every loopback spelling, scheme and embedded-IPv4 form refused; bombs and
limits refused as documented; expensive images and slow URLs delay only the requests that sent
them; the work of clients that went away dropped, each a single line of the log; valid and
garbage images mixed without a wrong score; memory flat over a thousand requests. /healthz is
healthy after every case. Slow: two servers and a few hundred requests."""

import asyncio
import socket
import struct
import time
import zlib

import httpx
import numpy as np
import psutil
import pytest
from test_fetch import EMBEDDED_FORMS, NOT_GLOBAL_FORMS, host_of

from benchmarks.serving import DRIP, expensive_png, image_host, server, synthetic_jpegs
from pipeline.serving import predict
from pipeline.serving.fetch import ALLOW_PRIVATE_ENV

pytestmark = pytest.mark.slow

NORMAL = synthetic_jpegs(1, 96, seed=3)[0]
EXPENSIVE = expensive_png(9000)  # 81 million pixels: three fit the default budget of a request
LOOPBACK_SPELLINGS = [
    "127.0.0.1", "localhost", "127.0.0.01", "LOCALHOST", "2130706433", "0177.0.0.1",
    "017700000001", "0x7f.0.0.1", "0x7f000001", "0x7f.1", "127.1", "127.0.1", "127.255.255.254",
    "0", "0.0.0.0", "[::1]", "[0:0:0:0:0:0:0:1]", "[0000::1]", "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]", "[::]", "[::ffff:0.0.0.0]",
]  # fmt: skip
SCHEMES = ["file:///etc/passwd", "ftp://example.org/a.png", "gopher://x/", "dict://x:11211/",
           "data:image/png;base64,AAAA", "//example.org/a.png"]  # fmt: skip


@pytest.fixture(scope="module")
def guarded(exported_model, tmp_path_factory):
    """The server with its defaults: the SSRF checks on."""
    log = tmp_path_factory.mktemp("guarded") / "server.log"
    with server(exported_model, log=log) as (url, process):
        yield url, process, log


@pytest.fixture(scope="module")
def host():
    redirects = {"to-broken": "http://[::1", "to-bad-port": "http://a:99999/", "loop": "/loop"}
    with image_host({"normal.jpg": NORMAL}, redirects) as base:
        yield base


@pytest.fixture(scope="module")
def trusting(exported_model, tmp_path_factory):
    """A server that treats the loopback image host as public, with a short download deadline."""
    log = tmp_path_factory.mktemp("trusting") / "server.log"
    env = {ALLOW_PRIVATE_ENV: "1"}
    with server(exported_model, "--download-deadline", "4", env=env, log=log) as (url, process):
        yield url, process, log


def healthy(url):
    assert httpx.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}


def post_urls(url, urls, **kwargs):
    return httpx.post(f"{url}/predict", json={"urls": urls}, timeout=60, **kwargs)


def upload(url, files, timeout=60):
    return httpx.post(f"{url}/predict", files=[("files", f) for f in files], timeout=timeout)


def bomb_png(side=20_000) -> bytes:
    """A PNG whose header declares side x side pixels (over twice Pillow's limit), pixels none."""

    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_malformed_bodies_are_400s_not_500s(guarded):
    url, _, _ = guarded
    json_body = {"headers": {"Content-Type": "application/json"}, "timeout": 30}
    for body in (b"[" * 100_000, b'{"urls": [', b'{"urls": ["\\ud800"]}'):
        assert httpx.post(f"{url}/predict", content=body, **json_body).status_code == 400
    multipart = {"Content-Type": "multipart/form-data; boundary=x"}
    garbled = httpx.post(f"{url}/predict", content=b"--x\r\nnonsense", headers=multipart)
    assert garbled.status_code == 400
    plain = httpx.post(f"{url}/predict", content=b"x", headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415
    healthy(url)


def test_malformed_urls_and_redirects_are_reasons_that_cost_no_other_image(trusting, host):
    url, _, _ = trusting
    urls = ["http://[::1", "http://a]b:80/", f"{host}/to-broken", f"{host}/to-bad-port"]
    rows = post_urls(url, [*urls, f"{host}/loop", f"{host}/normal.jpg"]).json()["results"]
    assert [row["reason"] == "" for row in rows] == [False] * 5 + [True]
    assert "is not a valid URL" in rows[0]["reason"] and "is not a valid URL" in rows[1]["reason"]
    assert "redirects to an invalid URL" in rows[2]["reason"]
    assert "more than 5 redirects" in rows[4]["reason"]
    healthy(url)


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
def test_loopback_spellings_are_refused(guarded, spelling):
    url, _, _ = guarded
    row = post_urls(url, [f"http://{spelling}/x.png"]).json()["results"][0]
    assert row["p_real"] is None and "non-public address" in row["reason"], row


def test_other_schemes_and_embedded_ipv4_forms_are_refused(guarded):
    url, _, _ = guarded
    rows = post_urls(url, SCHEMES).json()["results"]
    assert all("only http and https" in row["reason"] for row in rows), rows
    forms = [f"http://{host_of(address)}/x.png" for address, _ in EMBEDDED_FORMS]
    rows = post_urls(url, forms).json()["results"]
    for (address, embedded), row in zip(EMBEDDED_FORMS, rows, strict=True):
        assert f"which embeds {embedded}, a non-public address" in row["reason"], address
    forms = [f"http://{host_of(address)}/x.png" for address in NOT_GLOBAL_FORMS]
    rows = post_urls(url, forms).json()["results"]
    assert all("a non-public address" in row["reason"] for row in rows), rows
    healthy(url)


def test_limits_bombs_and_the_pixel_budget(guarded):
    url, _, _ = guarded
    assert upload(url, [("a.jpg", NORMAL)] * 33).status_code == 413  # --max-images 32
    assert upload(url, [("big.bin", b"\0" * (33 * 2**20))]).status_code == 413  # --max-body-mb
    bomb = upload(url, [("bomb.png", bomb_png())])
    assert bomb.status_code == 200 and bomb.json()["results"][0]["reason"] == "bomb"
    started = time.monotonic()
    over = upload(url, [(f"x{i}.png", EXPENSIVE) for i in range(32)])  # 2.6 billion pixels
    assert over.status_code == 413 and "over 256,000,000 a request" in over.json()["detail"]
    assert time.monotonic() - started < 2  # refused before decoding (it would take ~30 s)
    healthy(url)


async def timed_uploads(url, files, count):
    latencies = []
    async with httpx.AsyncClient(timeout=120) as client:
        for _ in range(count):
            started = time.monotonic()
            response = await client.post(f"{url}/predict", files=[("files", f) for f in files])
            assert response.status_code == 200 and response.json()["results"][0]["reason"] == ""
            latencies.append(time.monotonic() - started)
    return latencies


async def with_hostile_clients(clients, hostile, normal):
    """Run `normal` (a coroutine) while `clients` loop on `hostile` requests (client.post
    arguments); they hang up when it is done. Their status codes and `normal`'s result."""
    statuses = []

    async def attacker():
        async with httpx.AsyncClient(timeout=120) as client:
            while True:
                statuses.append((await client.post(**hostile)).status_code)

    tasks = [asyncio.ensure_future(attacker()) for _ in range(clients)]
    await asyncio.sleep(1.5)  # the hostile load builds up
    try:
        return await normal, statuses
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_expensive_images_delay_only_their_senders(guarded):
    """Issue 29: with 32 copies of this PNG, a normal client's small image waited up to 36 s.
    Now 32 are refused; three (within the budget) a request decode on half the decode threads, in
    fair turns, so the normal client's image never waits behind them; when the attackers hang up,
    their queued work is dropped and the next request is answered at once (10.7 s before)."""
    url, process, log = guarded
    rss_before = psutil.Process(process.pid).memory_info().rss
    alone = max(asyncio.run(timed_uploads(url, [("n.jpg", NORMAL)], 10)))
    files = [("files", (f"x{i}.png", EXPENSIVE)) for i in range(3)]
    hostile = {"url": f"{url}/predict", "files": files}
    latencies, statuses = asyncio.run(
        with_hostile_clients(4, hostile, timed_uploads(url, [("n.jpg", NORMAL)], 30))
    )
    assert all(status == 200 for status in statuses)  # those that ended before the others
    assert max(latencies) < max(1.0, 10 * alone), (alone, sorted(latencies)[-5:])
    started = time.monotonic()
    assert upload(url, [("n.jpg", NORMAL)]).status_code == 200
    assert time.monotonic() - started < 1.5  # the attackers' queued decodes were dropped
    growth = psutil.Process(process.pid).memory_info().rss - rss_before
    print(  # for `pytest -m slow -s`
        f"\nexpensive images: a normal upload's slowest {1000 * alone:.0f} ms alone, "
        f"{1000 * max(latencies):.0f} ms with 4 attackers; memory +{growth / 2**20:.0f} MiB"
    )
    assert growth < 1.5 * 2**30, f"{growth / 2**20:.0f} MiB"  # 1.3 GiB more in issue 29
    time.sleep(0.5)
    assert "went away before its answer" in log.read_text()
    healthy(url)


def test_slow_urls_delay_only_their_senders(trusting, host):
    """Issue 29: two requests of 32 slow URLs made a one-URL request wait 5.7 to 54.8 s, and one
    of them got a 504. Now each request has its share of the download threads and one deadline
    for its downloads (--download-deadline 4 here): the slow requests end at it, with a reason
    for each URL, and the innocent request is answered at once."""
    url, _, _ = trusting

    async def innocent():
        latencies = []
        async with httpx.AsyncClient(timeout=60) as client:
            for _ in range(10):
                started = time.monotonic()
                response = await client.post(
                    f"{url}/predict", json={"urls": [f"{host}/normal.jpg"]}
                )
                assert response.json()["results"][0]["reason"] == ""
                latencies.append(time.monotonic() - started)
        return latencies

    hostile = {"url": f"{url}/predict", "json": {"urls": [f"{host}{DRIP}"] * 32}}
    latencies, _ = asyncio.run(with_hostile_clients(4, hostile, innocent()))
    print(f"\nslow URLs: the innocent request's slowest {1000 * max(latencies):.0f} ms")
    assert max(latencies) < 1.0, latencies
    started = time.monotonic()
    slow = post_urls(url, [f"{host}{DRIP}"] * 32)
    assert slow.status_code == 200 and 3.5 < time.monotonic() - started < 8
    reasons = {row["reason"] for row in slow.json()["results"]}
    assert all("the request's downloads took 4 s" in reason for reason in reasons), reasons
    healthy(url)


def test_a_client_that_leaves_has_its_downloads_cut_off(trusting, host):
    """Its 8 slow URLs were being fetched 4 at a time (its share); once it hangs up, the server
    closes those connections at once rather than at the download deadline."""
    url, process, log = trusting
    host_port = int(host.rsplit(":", 1)[1])

    def downloads():
        connections = psutil.Process(process.pid).net_connections("tcp")
        return sum(1 for c in connections if c.raddr and c.raddr.port == host_port)

    def wait_until(condition, seconds):
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline
            time.sleep(0.05)

    request = httpx.Request("POST", f"{url}/predict", json={"urls": [f"{host}{DRIP}"] * 8})
    body = request.read()
    address, port = url.removeprefix("http://").split(":")
    head = f"POST /predict HTTP/1.1\r\nHost: {address}\r\n" + "".join(
        f"{key}: {value}\r\n" for key, value in request.headers.items() if key != "host"
    )
    with socket.create_connection((address, int(port))) as client:
        client.sendall(head.encode() + b"\r\n" + body)
        wait_until(lambda: downloads() == 4, 3)
    started = time.monotonic()
    wait_until(lambda: downloads() == 0, 2)  # --download-deadline is 4 s
    print(f"\ndownloads of a client that left closed after {time.monotonic() - started:.2f} s")
    healthy(url)


def test_valid_and_garbage_images_mixed_get_predicts_scores(guarded, exported_model, tmp_path):
    url, _, _ = guarded
    valid = {f"v{i}.jpg": data for i, data in enumerate(synthetic_jpegs(16, 96, seed=5))}
    rng = np.random.default_rng(0)
    garbage = {f"g{i}.jpg": rng.bytes(int(rng.integers(0, 5000))) for i in range(8)}
    cut = {f"c{i}.jpg": data[: len(data) // 2] for i, data in enumerate(list(valid.values())[:8])}
    garbage.update(cut)
    for name, data in valid.items():
        (tmp_path / name).write_bytes(data)
    rows = predict.predict([str(tmp_path / name) for name in valid], exported_model)
    expected = dict(zip(valid, (row["p_real"] for row in rows), strict=True))

    async def all_at_once():
        async with httpx.AsyncClient(timeout=60) as client:
            files = [*valid.items(), *garbage.items()]
            return await asyncio.gather(
                *(client.post(f"{url}/predict", files=[("files", file)]) for file in files)
            )

    answers = asyncio.run(all_at_once())
    assert all(response.status_code == 200 for response in answers)
    rows = [response.json()["results"][0] for response in answers]
    scored = [row for row in rows if row["name"] in valid]
    assert not [row for row in scored if abs(row["p_real"] - expected[row["name"]]) > 1e-6]
    assert all(row["p_real"] is None and row["reason"] for row in rows if row["name"] in garbage)
    healthy(url)


def test_dropped_clients_are_one_line_each_and_no_traceback(guarded):
    """Half hang up mid-upload, half while their (expensive) images are being decoded."""
    url, _, log = guarded
    before = log.read_text()
    files = [("files", (f"x{i}.png", EXPENSIVE)) for i in range(3)]
    request = httpx.Request("POST", f"{url}/predict", files=files)
    body = request.read()
    host, port = url.removeprefix("http://").split(":")
    head = f"POST /predict HTTP/1.1\r\nHost: {host}\r\n" + "".join(
        f"{key}: {value}\r\n" for key, value in request.headers.items() if key != "host"
    )
    for index in range(50):
        with socket.create_connection((host, int(port))) as client:
            client.sendall(head.encode() + b"\r\n" + (body[:100] if index % 2 else body))
            time.sleep(0.05)
    time.sleep(2.0)
    added = log.read_text()[len(before) :]
    assert "Traceback" not in added and "ERROR" not in added, added[-2000:]
    assert added.count("went away") == 50, added[-2000:]
    healthy(url)


def test_memory_stays_flat_over_a_thousand_requests(guarded):
    url, process, _ = guarded
    rss = psutil.Process(process.pid).memory_info
    with httpx.Client(timeout=30) as client:
        for index in range(1000):
            if index == 100:
                warm = rss().rss
            response = client.post(f"{url}/predict", files=[("files", ("n.jpg", NORMAL))])
            assert response.status_code == 200
    growth = rss().rss - warm
    assert growth < 30 * 2**20, f"{growth / 2**20:.1f} MiB over 900 requests"
    healthy(url)
