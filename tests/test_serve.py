"""`aiic serve` on loopback: answers equal `aiic predict`'s, every limit and bad input gives its
status or reason (never a 500), URLs go through the SSRF-safe fetcher, concurrent requests share
forward passes, and a short load test."""

import asyncio
import base64
import contextlib
import http.server
import io
import json
import logging
import shutil
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_image
from pipeline.core.entry import run
from pipeline.data.images import load_for_model
from pipeline.models.occlusion import Occlusion, occlusion_maps
from pipeline.serving import predict, serve
from pipeline.serving.batcher import MicroBatcher
from pipeline.serving.inference import forward, load_exported
from pipeline.serving.serve import Settings, create_app


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@contextlib.contextmanager
def running(settings: Settings):
    """The app under uvicorn on 127.0.0.1 (a free port), in a thread; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(10)


LIMITS = {"max_images": 4, "max_body_bytes": 200_000, "max_batch": 8, "max_maps": 2}


@pytest.fixture(scope="module")
def api(exported_model):
    with running(Settings(model_dir=str(exported_model), **LIMITS)) as (url, server):
        yield url, server


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """name -> bytes: three good images, and files prepare would refuse."""
    folder = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(7)
    good = {f"good{i}.png": png(synthetic_image(("real", "ai")[i % 2], 48, rng)) for i in range(3)}
    bad = {
        "page.jpg": b"<html>Access denied</html>",
        "cut.png": good["good0.png"][:300],
        "dot.png": png(Image.new("RGB", (1, 1))),
    }
    for name, data in {**good, **bad}.items():
        (folder / name).write_bytes(data)
    return folder, good, bad


def upload(url, files, endpoint="predict"):
    return httpx.post(
        f"{url}/{endpoint}", files=[("files", (name, data)) for name, data in files], timeout=60
    )


def predict_scores(folder, names, model):
    rows = predict.predict([str(folder / name) for name in names], model)
    return {name: row["p_real"] for name, row in zip(names, rows, strict=True)}


def test_health_and_model(api, exported_model):
    url, _ = api
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{url}/model").json()["input_size"] == 32


def test_answers_equal_predict_in_request_order(api, images, exported_model):
    url, _ = api
    folder, good, bad = images
    names = ["good2.png", "page.jpg", "good0.png", "dot.png"]
    response = upload(url, [(name, {**good, **bad}[name]) for name in names])
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["name"] for r in results] == names
    expected = predict_scores(folder, names, exported_model)
    for row in results:
        if expected[row["name"]] is None:
            assert row["p_real"] is None and row["label"] is None
        else:
            assert row["p_real"] == pytest.approx(expected[row["name"]], abs=1e-6)
            assert row["label"] == ("real" if row["p_real"] >= 0.5 else "ai") and row["reading"]
    assert [r["reason"] for r in results] == ["", "not_an_image", "", "too_small"]


def test_decode_errors_and_bombs_are_reasons_not_500s(api, images, monkeypatch):
    url, _ = api
    _, good, bad = images
    cut = upload(url, [("cut.png", bad["cut.png"]), ("empty.png", b"")])
    assert cut.status_code == 200
    assert [row["reason"] for row in cut.json()["results"]] == ["truncated", "empty"]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 48 x 48 is over twice this: refused
    bomb = upload(url, [("big.png", good["good1.png"])])
    assert bomb.status_code == 200 and bomb.json()["results"][0]["reason"] == "bomb"


def test_limits(api, images):
    url, _ = api
    _, good, _ = images
    assert upload(url, [("a.png", good["good0.png"])] * 5).status_code == 413
    assert upload(url, [("a.png", b"\0" * 300_000)]).status_code == 413  # declared length

    def chunks():  # no Content-Length: the limit holds while the body streams
        for _ in range(40):
            yield b"\0" * 10_000

    streamed = httpx.post(
        f"{url}/predict", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    plain_text = httpx.post(f"{url}/predict", content=b"x", headers={"Content-Type": "text/plain"})
    assert plain_text.status_code == 415
    assert httpx.post(f"{url}/predict", json={"urls": "http://x"}).status_code == 400
    assert httpx.post(f"{url}/predict", json={"urls": []}).status_code == 400


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "169.254.169.254", "10.0.0.1", "[::1]", "2130706433", "0x7f.1"],
)
def test_urls_to_private_addresses_are_refused_through_the_api(api, address):
    url, _ = api
    response = httpx.post(f"{url}/predict", json={"urls": [f"http://{address}/x.png"]})
    assert response.status_code == 200
    row = response.json()["results"][0]
    assert row["p_real"] is None and "non-public address" in row["reason"]
    assert "not a valid URL" not in row["reason"]


def test_a_huge_url_gets_a_short_reason(api):
    url, _ = api
    long_url = "http://example.org/" + "a" * 100_000
    row = httpx.post(f"{url}/predict", json={"urls": [long_url]}).json()["results"][0]
    assert "over 2048" in row["reason"] and len(row["reason"]) < 300 and len(row["name"]) < 200


@pytest.fixture(scope="module")
def image_host(images):
    """A loopback web server for the URL tests; /slow answers a byte a second."""
    folder, _, _ = images

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path != "/slow":
                return super().do_GET()
            with contextlib.suppress(OSError):
                for byte in b"HTTP/1.1 200 OK\r\n":
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(1)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_a_url_is_scored_as_predict_scores_it(api, images, image_host, exported_model, monkeypatch):
    url, _ = api
    monkeypatch.setenv("AIIC_ALLOW_PRIVATE_URLS", "1")  # the loopback host stands for a public one
    image_url = f"{image_host}/good1.png"
    row = httpx.post(f"{url}/predict", json={"urls": [image_url]}, timeout=60).json()["results"][0]
    assert row["reason"] == "" and row["name"] == image_url
    assert row["p_real"] == pytest.approx(predict.predict([image_url], exported_model)[0]["p_real"])


def test_a_request_that_takes_too_long_times_out(exported_model, image_host, monkeypatch):
    monkeypatch.setenv("AIIC_ALLOW_PRIVATE_URLS", "1")
    settings = Settings(model_dir=str(exported_model), timeout_s=1.0, max_batch=2)
    with running(settings) as (url, _):
        started = time.monotonic()
        response = httpx.post(f"{url}/predict", json={"urls": [f"{image_host}/slow"]}, timeout=30)
        assert response.status_code == 504 and time.monotonic() - started < 5


def test_a_request_over_the_pixel_budget_is_refused_before_decoding(exported_model, images):
    _, good, _ = images
    budget = 2 * 48 * 48  # two of the 48 x 48 test images
    settings = Settings(model_dir=str(exported_model), max_request_pixels=budget)
    with running(settings) as (url, _), watched_decoding() as decoded:
        refused = upload(url, [("a.png", good["good0.png"])] * 3)
        assert refused.status_code == 413 and not decoded
        assert "decode to 6,912 pixels, over 4,608 a request" in refused.json()["detail"]
        assert upload(url, [("a.png", good["good0.png"])] * 2).status_code == 200
        assert len(decoded) == 2


@contextlib.contextmanager
def watched_decoding(seconds=0.0):
    """The names of the uploads the server decodes (after `seconds` each), in order."""
    decoded = []

    def slow(data, *args):
        time.sleep(seconds)
        decoded.append(len(data))
        return load_for_model(data, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serve, "load_for_model", slow)
        yield decoded


@contextlib.contextmanager
def server_log():
    """Records of the server's loggers (uvicorn's do not reach the root logger)."""
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "pipeline")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def send_and_leave(url, request: httpx.Request, body: bytes, wait: float) -> None:
    """Send the request's head and `body` on a socket, then close it after `wait` seconds."""
    host, port = url.removeprefix("http://").split(":")
    head = f"POST {request.url.raw_path.decode()} HTTP/1.1\r\nHost: {host}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in request.headers.items() if k != "host")
    with socket.create_connection((host, int(port))) as client:
        client.sendall(head.encode("latin-1") + b"\r\n" + body)
        time.sleep(wait)


def test_a_client_that_leaves_mid_upload_is_one_info_line(api, images):
    url, _ = api
    _, good, _ = images
    files = [("files", ("a.png", good["good0.png"]))]
    body = (request := httpx.Request("POST", f"{url}/predict", files=files)).read()
    with server_log() as records:
        send_and_leave(url, request, body[: len(body) // 2], wait=0.2)
        time.sleep(0.5)
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert not [r for r in records if r.levelno >= logging.WARNING or r.exc_info], records
    lines = [r.getMessage() for r in records if "went away" in r.getMessage()]
    assert len(lines) == 1 and "while sending its request" in lines[0]


def test_the_queued_work_of_a_client_that_left_is_dropped(exported_model, images):
    _, good, _ = images
    settings = Settings(model_dir=str(exported_model), decode_threads=1, max_images=8)
    with running(settings) as (url, _), watched_decoding(0.3) as decoded, server_log() as records:
        files = [("files", (f"{i}.png", good["good0.png"])) for i in range(8)]
        request = httpx.Request("POST", f"{url}/predict", files=files)
        send_and_leave(url, request, request.read(), wait=0.45)  # during the second decode
        time.sleep(1.5)  # the other six would be decoded by now
        assert len(decoded) <= 3
        assert upload(url, [("b.png", good["good1.png"])]).status_code == 200  # at once
    lines = [r.getMessage() for r in records if "went away" in r.getMessage()]
    assert len(lines) == 1 and "its work was dropped" in lines[0]


def test_slow_downloads_cost_only_their_own_request(exported_model, image_host, monkeypatch):
    """A request's share of the fetch threads and its downloads' deadline: four URLs that trickle
    a byte a second end at the deadline with a reason each (not a 504), and another request's URL
    is fetched meanwhile on the threads the first may not take."""
    monkeypatch.setenv("AIIC_ALLOW_PRIVATE_URLS", "1")
    limits = {"fetch_threads": 3, "fetches_per_request": 2, "download_deadline_s": 2.0}
    with running(Settings(model_dir=str(exported_model), **limits)) as (url, _):

        async def both():
            async with httpx.AsyncClient(timeout=30) as client:
                slow = asyncio.ensure_future(
                    client.post(f"{url}/predict", json={"urls": [f"{image_host}/slow"] * 4})
                )
                await asyncio.sleep(0.3)
                started = time.monotonic()
                fast = await client.post(
                    f"{url}/predict", json={"urls": [f"{image_host}/good1.png"]}
                )
                fast_seconds = time.monotonic() - started
                return await slow, fast, fast_seconds

        slow, fast, fast_seconds = asyncio.run(both())
    assert fast.status_code == 200 and fast.json()["results"][0]["reason"] == ""
    assert fast_seconds < 1.5
    assert slow.status_code == 200
    reasons = [row["reason"] for row in slow.json()["results"]]
    assert all("was cut off: the request's downloads took 2 s" in r for r in reasons), reasons


def test_a_malformed_url_costs_only_its_own_image(api, images, image_host, monkeypatch):
    url, _ = api
    monkeypatch.setenv("AIIC_ALLOW_PRIVATE_URLS", "1")
    urls = ["http://[::1", f"{image_host}/good1.png", "http://a]b:80/"]
    rows = httpx.post(f"{url}/predict", json={"urls": urls}, timeout=60).json()["results"]
    assert [row["reason"] == "" for row in rows] == [False, True, False]
    assert "is not a valid URL" in rows[0]["reason"] and "is not a valid URL" in rows[2]["reason"]


def test_concurrent_requests_share_forward_passes():
    batches = []

    def score(images):
        batches.append(len(images))
        return images.reshape(len(images), -1)[:, 0].astype(np.float64)

    batcher = MicroBatcher(score, max_batch=8, wait_s=0.5, expecting=lambda: len(batches) == 0)

    async def many():
        images = [np.full((1, 2, 2, 3), value, np.uint8) for value in range(6)]
        return await asyncio.gather(*(batcher.submit(image) for image in images))

    scores = asyncio.run(many())
    batcher.close()
    assert [float(s[0]) for s in scores] == [0, 1, 2, 3, 4, 5]  # each request gets its own score
    assert batches[0] > 1 and sum(batches) == 6


def test_a_timed_out_request_is_not_scored_and_the_batcher_goes_on():
    release, batches = threading.Event(), []

    def score(images):
        release.wait(5)
        batches.append(len(images))
        return np.zeros(len(images))

    batcher = MicroBatcher(score, max_batch=2, wait_s=0.0, expecting=lambda: False)

    async def cancel_one_then_submit():
        first = asyncio.ensure_future(batcher.submit(np.zeros((1, 2, 2, 3), np.uint8)))
        await asyncio.sleep(0.1)  # the batcher is busy with it
        queued = asyncio.ensure_future(batcher.submit(np.zeros((1, 2, 2, 3), np.uint8)))
        await asyncio.sleep(0.1)
        queued.cancel()  # as asyncio.wait_for does when a request times out
        await asyncio.sleep(0.1)  # the cancellation reaches the batcher's future
        release.set()
        await first
        return await asyncio.wait_for(batcher.submit(np.zeros((2, 2, 2, 3), np.uint8)), 5)

    assert len(asyncio.run(cancel_one_then_submit())) == 2
    batcher.close()
    assert batches == [1, 2]


def test_a_short_load_test(api, images, exported_model):
    """Concurrency 8, bounded: good, bad and oversized requests mixed; no 5xx, every good image
    answered with predict's score."""
    url, server = api
    folder, good, bad = images
    expected = predict_scores(folder, list(good), exported_model)
    mix = [[(n, good[n])] for n in good] + [
        [("page.jpg", bad["page.jpg"])],
        [("x", b"\0" * 300_000)],
    ]
    requests = [mix[i % len(mix)] for i in range(40)]

    async def load():
        limit = asyncio.Semaphore(8)
        async with httpx.AsyncClient(timeout=60) as client:

            async def one(files):
                async with limit:
                    response = await client.post(
                        f"{url}/predict", files=[("files", file) for file in files]
                    )
                    return files[0][0], response

            return await asyncio.gather(*(one(files) for files in requests))

    started = time.monotonic()
    answers = asyncio.run(load())
    assert time.monotonic() - started < 60
    assert all(response.status_code < 500 for _, response in answers)
    for name, response in answers:
        if name in good:
            assert response.json()["results"][0]["p_real"] == pytest.approx(
                expected[name], abs=1e-6
            )
        else:
            assert response.status_code == (413 if name == "x" else 200)


def test_explain_answers_maps_of_the_same_scores_through_the_batcher(
    api, images, exported_model, monkeypatch
):
    url, server = api
    batcher, submitted = server.config.app.state.batcher, []
    submit = batcher.submit

    async def recorded(batch: np.ndarray) -> np.ndarray:
        submitted.append(len(batch))
        return await submit(batch)

    monkeypatch.setattr(batcher, "submit", recorded)
    folder, good, bad = images
    names = ["dot.png", "good1.png"]
    response = upload(url, [(name, {**good, **bad}[name]) for name in names], "explain")
    assert response.status_code == 200
    body = response.json()
    refused, mapped = body["results"]
    assert refused["p_real"] is None and refused["reason"] == "too_small" and "map" not in refused
    assert mapped["p_real"] == pytest.approx(
        predict_scores(folder, ["good1.png"], exported_model)["good1.png"], abs=1e-6
    )
    model, info = load_exported(exported_model)
    shaped = load_for_model(good["good1.png"], 32, "center_crop")
    _, (expected,) = occlusion_maps(forward(model), [shaped], Occlusion(4, "blur"), 32)
    assert np.array(mapped["map"]["grid"]) == pytest.approx(expected, abs=1e-5)
    assert mapped["map"]["region"] == [8, 8, 40, 40]  # the central 32 px of the 48 px image
    assert "png" not in mapped["map"] and "not where an image was generated" in body["meaning"]
    # the image and its 16 covered copies went through the micro-batcher together
    assert submitted == [17]
    drawn = upload(url, [("good0.png", good["good0.png"])], "explain?png=true").json()
    picture = Image.open(io.BytesIO(base64.b64decode(drawn["results"][0]["map"]["png"])))
    assert picture.format == "PNG" and picture.width > 200


def test_explain_keeps_the_limits(api, images, exported_model, image_host, monkeypatch):
    url, _ = api
    _, good, _ = images
    three = upload(url, [("a.png", good["good0.png"])] * 3, "explain")
    assert three.status_code == 413 and "over 2 a request" in three.json()["detail"]
    assert upload(url, [("a.png", b"\0" * 300_000)], "explain").status_code == 413
    assert httpx.post(f"{url}/explain", json={"urls": []}).status_code == 400
    assert httpx.post(f"{url}/explain?png=maybe", json={"urls": ["x"]}).status_code == 422
    monkeypatch.setenv("AIIC_ALLOW_PRIVATE_URLS", "1")
    settings = Settings(model_dir=str(exported_model), timeout_s=1.0, max_batch=2)
    with running(settings) as (slow_url, _):
        response = httpx.post(
            f"{slow_url}/explain", json={"urls": [f"{image_host}/slow"]}, timeout=30
        )
        assert response.status_code == 504


def test_a_model_exported_before_maps_answers_404_with_the_reason(exported_model, tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(exported_model, folder)
    info = json.loads((folder / "model.json").read_text())
    del info["explain"]
    (folder / "model.json").write_text(json.dumps(info))
    with running(Settings(model_dir=str(folder))) as (url, _):
        response = upload(url, [("a.png", png(Image.new("RGB", (40, 40))))], "explain")
        assert response.status_code == 404 and "export it again" in response.json()["detail"]
        assert upload(url, [("a.png", png(Image.new("RGB", (40, 40))))]).status_code == 200


def test_serve_refuses_to_start_without_a_model(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        run(lambda: serve.main(["--model", str(tmp_path / "none")]), "aiic serve")
    assert exited.value.code == 1 and "No exported model" in capsys.readouterr().err
