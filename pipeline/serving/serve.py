"""`aiic serve`: the exported model behind an HTTP API (FastAPI on uvicorn).

POST /predict takes multipart `files` or JSON {"urls": [...]} and answers one result per image, in
request order, with the numbers `aiic predict` gives: the same decoding, size check and resizing
(pipeline.data.images), the same SSRF-safe fetcher for URLs (pipeline.serving.fetch), the same
model. POST /explain takes the same inputs, at most `max_maps` images, and adds each image's
occlusion map (pipeline.models.occlusion): its grid of numbers, the image's pixels it covers, and
with ?png=true the map drawn over the image; the covered copies go through the same micro-batcher,
under the same limits. GET /healthz answers 200 once the model is loaded, GET /model its model.json.

Images of concurrent requests are scored together in shared forward passes
(pipeline.serving.batcher).

Hostile or faulty requests cost their senders, not everyone: no body, URL or redirect gives a 500
(a malformed one is a 400 or that image's reason); a request's images are measured from their
headers and refused with 413 over a budget of decoded pixels before any is decoded; decoding and
downloading run on pools shared fairly among requests (pipeline.serving.fairpool: a request's turn
by the work it has had, a share of the download threads each, images over `large_image_pixels` on at
most half the decode threads, at a lower priority); a request's downloads share one deadline; and a
request whose client has gone, or that timed out, has its queued work dropped and its downloads cut
off."""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import functools
import gc
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from pipeline.core.entry import run
from pipeline.core.errors import AiicError
from pipeline.core.paths import EXPORT_DIR
from pipeline.data.images import (
    INPUT_MODES,
    UnreadableImage,
    decode,
    load_for_model,
    pixel_count,
    shape_for_model,
)
from pipeline.data.overlay import map_png
from pipeline.models.occlusion import Occlusion, map_from_scores, occlusion_copies
from pipeline.serving.batcher import MicroBatcher
from pipeline.serving.fairpool import FairPool
from pipeline.serving.fetch import Deadline, FetchRefused, decode_fetched, fetch, shorten
from pipeline.serving.inference import (
    RUNTIMES,
    describe,
    exported_files,
    forward,
    load_exported,
    verdict,
)
from pipeline.serving.predict import fetched_for_model

MAX_PARTS = 10_000  # multipart parts parsed before Starlette refuses the body
SETTINGS_ENV = "AIIC_SERVE_SETTINGS"  # how the settings reach uvicorn's worker processes
CLIENT_CLOSED = 499  # nginx's status for a client that left first; nobody receives it
LARGE_IMAGE_NICE = 10  # the scheduling priority of the threads that decode large images
logger = logging.getLogger(__name__)


@dataclass
class Settings:
    model_dir: str = str(EXPORT_DIR)
    runtime: str = "keras"
    max_batch: int = 32
    batch_wait_ms: float = 5.0
    max_images: int = 32  # per request
    max_body_bytes: int = 32 * 1024 * 1024
    timeout_s: float = 60.0  # per request
    max_maps: int = 4  # images per POST /explain: each map is grid * grid + 1 forward passes
    max_request_pixels: int = 256_000_000  # decoded, a request: 32 images of 8 megapixels
    large_image_pixels: int = 16_000_000  # images over this decode on half the decode threads
    decode_threads: int = field(default_factory=lambda: os.cpu_count() or 2)
    fetch_threads: int = 64
    fetches_per_request: int = 4  # a request's share of the fetch threads
    download_deadline_s: float = 30.0  # a request's downloads, all together


class Work:
    """One request's share of the decode and fetch pools and its downloads' deadline; `end()`
    drops what it still has queued and cuts its downloads off (answered, timed out or gone)."""

    def __init__(self, decoders: FairPool, fetchers: FairPool, download_deadline_s: float) -> None:
        self.decoding, self.fetching = decoders.flow(), fetchers.flow()
        self.download_deadline_s = download_deadline_s
        self.downloads: Deadline | None = None

    def deadline(self) -> Deadline:
        if self.downloads is None:
            seconds = self.download_deadline_s
            why = f"was cut off: the request's downloads took {seconds:g} s"
            self.downloads = Deadline(seconds, why)
        return self.downloads

    def end(self) -> None:
        self.decoding.cancel()
        self.fetching.cancel()
        if self.downloads is not None:
            self.downloads.expire()


class BodyTooLarge(Exception):
    """The request body passed Settings.max_body_bytes while it arrived."""


class BodyLimit:
    """ASGI middleware: 413 for a declared Content-Length over the limit, before reading it;
    BodyTooLarge (a 413 too) when a chunked body passes the limit while it streams."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await too_large(self.max_bytes)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge
            return message

        await self.app(scope, limited_receive, send)


def too_large(max_bytes: int) -> JSONResponse:
    return JSONResponse({"detail": f"the request body is over {max_bytes} bytes"}, 413)


def result(name: str, p_real: float | None, reason: str, threshold: float) -> dict[str, Any]:
    """One image's answer: P(real), the verdict and its reading, or why it was not scored."""
    if p_real is None:
        return {"name": name, "p_real": None, "label": None, "reading": None, "reason": reason}
    return {
        "name": name,
        "p_real": p_real,
        "label": verdict(p_real, threshold),
        "reading": describe(p_real, threshold),
        "reason": "",
    }


def create_app(settings: Settings) -> FastAPI:
    """The FastAPI application; the model loads when it starts (uvicorn's lifespan)."""
    state: dict[str, Any] = {"preparing": 0}  # requests whose images are on their way

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        model, info = load_exported(Path(settings.model_dir), settings.runtime)
        score = forward(model)
        size = info["input_size"]
        for batch in sorted({1, 2, settings.max_batch}):  # trace the shapes before the first user
            score(np.zeros((batch, size, size, 3), np.uint8))
        # TensorFlow and the model leave some 500,000 objects that live as long as the process;
        # a full collection walks them all (a few hundred ms, several forward passes, for every
        # request in flight). gc.freeze() leaves them out of every later collection.
        gc.freeze()
        state["info"] = info
        try:
            state["occlusion"] = Occlusion.of_model(info)
        except AiicError as error:  # exported before maps: POST /explain says so
            state["occlusion"] = str(error)
        state["batcher"] = MicroBatcher(
            score,
            settings.max_batch,
            settings.batch_wait_ms / 1000,
            lambda: state["preparing"] > 0,
        )
        app.state.batcher = state["batcher"]  # for the tests
        state["decoders"] = FairPool(
            settings.decode_threads,
            "aiic-decode",
            heavy_cost=settings.large_image_pixels,
            heavy_workers=max(1, settings.decode_threads // 2),
            heavy_nice=LARGE_IMAGE_NICE,
        )
        state["fetchers"] = FairPool(
            settings.fetch_threads, "aiic-fetch", per_flow=settings.fetches_per_request
        )
        yield
        state["batcher"].close()
        state["decoders"].shutdown()
        state["fetchers"].shutdown()

    app = FastAPI(title="ai-image-classifier", lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(request: Request, error: BodyTooLarge) -> JSONResponse:
        return too_large(settings.max_body_bytes)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        ready = "batcher" in state
        return JSONResponse({"status": "ok" if ready else "loading"}, 200 if ready else 503)

    @app.get("/model")
    async def model_info() -> dict[str, Any]:
        return state["info"]

    @app.exception_handler(ClientDisconnect)
    async def client_disconnected(request: Request, error: ClientDisconnect) -> Response:
        logger.info("%s went away while sending its request", client_of(request))
        return Response(status_code=CLIENT_CLOSED)

    async def inputs(request: Request) -> list[tuple[str, str, bytes | str]]:
        """(name, kind, payload) per image: kind "file" with its bytes or "url" with the URL."""
        content_type = request.headers.get("content-type", "").lower()
        if content_type.startswith("multipart/form-data"):
            # Starlette's own caps on parts answer 400; ours, on images, is the documented 413.
            # The form closes its spooled files when the block ends (Starlette's Requests page).
            async with request.form(max_files=MAX_PARTS, max_fields=MAX_PARTS) as form:
                files = [item for item in form.getlist("files") if isinstance(item, UploadFile)]
                return [(item.filename or "", "file", await item.read()) for item in files]
        if content_type.startswith("application/json"):
            try:
                body = json.loads(await request.body())
            except (ValueError, RecursionError) as error:  # RecursionError: [[[[... nested deep
                raise HTTPException(400, f"the body is not JSON: {error}") from error
            urls = body.get("urls") if isinstance(body, dict) else None
            if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
                raise HTTPException(400, 'expected {"urls": ["https://...", ...]}')
            if not all(map(encodable, urls)):
                raise HTTPException(400, "a URL holds a lone surrogate (\\ud800): not text")
            return [(shorten(url), "url", url) for url in urls]
        raise HTTPException(415, 'send multipart/form-data `files` or JSON {"urls": [...]}')

    def download(url: str, deadline: Deadline) -> bytes:
        return fetch(url, shared=deadline).body

    def shaped(kind: str, source: str, data: bytes) -> np.ndarray:
        info = state["info"]
        if kind == "url":
            return fetched_for_model(source, data, info)
        return load_for_model(data, info["input_size"], info["input_mode"], info.get("min_size", 0))

    def shaped_for_map(kind: str, source: str, data: bytes) -> tuple[Any, np.ndarray]:
        """The decoded image and the model's input of it, as `shaped` makes the input."""
        info = state["info"]
        image = decode_fetched(source, data) if kind == "url" else decode(data)
        name = shorten(source) if kind == "url" else "<bytes>"
        size, mode = info["input_size"], info["input_mode"]
        return image, shape_for_model(image, size, mode, name, info.get("min_size", 0))

    async def prepare(
        items: list[tuple[str, str, Any]], work: Work, shape: Callable = shaped
    ) -> list[Any]:
        """Each image fetched (URLs, on the request's share of the fetch threads), measured, then
        decoded and shaped in its fair turn: an array, or the exception that says why not."""
        outcomes: list[Any] = [payload for _, _, payload in items]  # bytes until decoded
        fetching = {
            i: work.fetching.submit(download, url, work.deadline())
            for i, (_, kind, url) in enumerate(items)
            if kind == "url"
        }
        await settle(outcomes, fetching)
        data = {i: body for i, body in enumerate(outcomes) if isinstance(body, bytes)}
        pixels = await asyncio.to_thread(lambda: {i: pixel_count(body) for i, body in data.items()})
        if (total := sum(pixels.values())) > settings.max_request_pixels:
            budget = settings.max_request_pixels
            raise HTTPException(
                413,
                f"the images decode to {total:,} pixels, over {budget:,} a request: send fewer"
                " or smaller images",
            )
        decoding = {
            i: work.decoding.submit(shape, items[i][1], items[i][2], body, cost=max(pixels[i], 1))
            for i, body in data.items()
        }
        await settle(outcomes, decoding)
        return outcomes

    async def score(items: list[tuple[str, str, Any]], work: Work) -> dict[str, Any]:
        state["preparing"] += 1
        try:
            outcomes = await prepare(items, work)
        finally:
            state["preparing"] -= 1
        good = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, np.ndarray)]
        scores = (
            await state["batcher"].submit(np.stack([outcomes[i] for i in good])) if good else []
        )
        p_real = dict(zip(good, map(float, scores), strict=True))
        threshold = state["info"]["threshold"]
        results = []
        for index, ((name, kind, _), outcome) in enumerate(zip(items, outcomes, strict=True)):
            results.append(result(name, p_real.get(index), reason(kind, outcome), threshold))
        return {"results": results}

    async def explained(items: list[tuple[str, str, Any]], work: Work, png: bool) -> dict[str, Any]:
        occlusion, info = state["occlusion"], state["info"]
        state["preparing"] += 1
        try:
            outcomes = await prepare(items, work, shaped_for_map)
        finally:
            state["preparing"] -= 1
        good = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, tuple)]
        copies = [
            await asyncio.wrap_future(
                work.decoding.submit(occlusion_copies, outcomes[i][1], occlusion)
            )
            for i in good
        ]
        scores = await state["batcher"].submit(np.concatenate(copies)) if good else []
        parts = np.split(np.asarray(scores), len(good)) if good else []
        maps = {
            i: map_from_scores(part, occlusion.grid) for i, part in zip(good, parts, strict=True)
        }
        region_of, threshold = INPUT_MODES[info["input_mode"]].region, info["threshold"]
        results = []
        for index, ((name, kind, _), outcome) in enumerate(zip(items, outcomes, strict=True)):
            if index not in maps:
                results.append(result(name, None, reason(kind, outcome), threshold))
                continue
            (image, _), (p_real, heat) = outcome, maps[index]
            region = region_of(image.width, image.height, info["input_size"])
            image_map: dict[str, Any] = {"grid": heat.round(6).tolist(), "region": list(region)}
            if png:
                picture = await asyncio.wrap_future(
                    work.decoding.submit(map_png, image, heat, region)
                )
                image_map["png"] = base64.b64encode(picture).decode()
            results.append({**result(name, p_real, "", threshold), "map": image_map})
        return {"results": results, "meaning": occlusion.meaning}

    async def answer(request: Request, work: Work, limit: int, respond: Callable) -> Any:
        """`respond(items, work)` for the request's images (at most `limit`), or nothing where
        the client goes away first."""
        items = await inputs(request)
        if not items:
            raise HTTPException(400, "no images: send `files` or `urls`")
        if len(items) > limit:
            raise HTTPException(413, f"{len(items)} images, over {limit} a request")
        scoring = asyncio.ensure_future(respond(items, work))
        gone = asyncio.ensure_future(disconnected(request))
        try:
            finished, _ = await asyncio.wait({scoring, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # on a time-out too: the work of a request nobody waits for stops
            scoring.cancel()
            gone.cancel()
        if scoring not in finished:
            logger.info("%s went away before its answer; its work was dropped", client_of(request))
            return Response(status_code=CLIENT_CLOSED)
        return scoring.result()

    async def within_time(request: Request, limit: int, respond: Callable) -> Any:
        work = Work(state["decoders"], state["fetchers"], settings.download_deadline_s)
        try:
            return await asyncio.wait_for(answer(request, work, limit, respond), settings.timeout_s)
        except asyncio.TimeoutError as error:  # not TimeoutError itself before Python 3.11
            raise HTTPException(504, f"the request took over {settings.timeout_s:g} s") from error
        finally:
            work.end()

    @app.post("/predict")
    async def predict(request: Request) -> Any:
        return await within_time(request, settings.max_images, score)

    @app.post("/explain")
    async def explain(request: Request, png: bool = False) -> Any:
        if isinstance(state["occlusion"], str):
            raise HTTPException(404, state["occlusion"])
        respond = functools.partial(explained, png=png)
        return await within_time(request, settings.max_maps, respond)

    return app


async def settle(outcomes: list[Any], jobs: dict[int, Future]) -> None:
    """outcomes[i] = job i's result or exception, once all are done. Cancelling the wait cancels
    the jobs that have not begun (asyncio.wrap_future passes the cancellation on)."""
    ends = await asyncio.gather(*map(asyncio.wrap_future, jobs.values()), return_exceptions=True)
    for index, end in zip(jobs, ends, strict=True):
        outcomes[index] = end


async def disconnected(request: Request) -> None:
    """Returns once the client has gone. After the body, uvicorn's receive() waits until the
    connection closes or the response is sent (Starlette's StreamingResponse listens so too)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # JSON's \\ud800 escapes decode to lone surrogates
        return False
    return True


def client_of(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "a client"


def reason(kind: str, outcome: Any) -> str:
    """Why an image was not scored ("" when it was); an unexpected error is logged, and costs
    only its own image."""
    if isinstance(outcome, UnreadableImage):
        return str(outcome) if kind == "url" else outcome.reason
    if isinstance(outcome, FetchRefused):
        return str(outcome)
    if isinstance(outcome, asyncio.CancelledError):  # its pool shut down: the server is stopping
        return "cancelled: the server is stopping"
    if isinstance(outcome, BaseException):
        logger.error("an image failed unexpectedly", exc_info=outcome)
        return f"internal error ({type(outcome).__name__}); the server's log has its details"
    return ""


def app_from_environment() -> FastAPI:
    """uvicorn's factory in each worker process (--workers > 1): settings from SETTINGS_ENV."""
    return create_app(Settings(**json.loads(os.environ[SETTINGS_ENV])))


def log_config() -> dict[str, Any]:
    """uvicorn's logging, with the project's loggers' info lines (a client that went away, one
    line each) through its handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["pipeline"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    import uvicorn

    exported_files(Path(settings.model_dir), settings.runtime)  # a missing model fails here, now
    options = {"host": host, "port": port, "log_config": log_config()}
    if workers == 1:
        uvicorn.run(create_app(settings), **options)
        return
    os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
    uvicorn.run(
        "pipeline.serving.serve:app_from_environment", factory=True, workers=workers, **options
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """serve's arguments, declared once for its own parser and `aiic serve`'s sub-parser, so that
    `aiic serve --help` lists every option main() reads; defaults are Settings'."""
    defaults = Settings()
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1: behind a reverse proxy")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default %(default)s)")
    parser.add_argument(
        "--model", default=defaults.model_dir, metavar="DIR", help="exported model folder"
    )
    parser.add_argument(
        "--runtime",
        choices=tuple(RUNTIMES),
        default=defaults.runtime,
        help="keras: model.keras with TensorFlow; litert: model.tflite with the LiteRT runtime",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=defaults.max_batch,
        help="images per shared forward pass (default %(default)s)",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=defaults.batch_wait_ms,
        help="how long a batch waits for images of requests still being decoded",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes, each with the model")
    parser.add_argument(
        "--max-images",
        type=int,
        default=defaults.max_images,
        help="images per request (default %(default)s)",
    )
    parser.add_argument(
        "--max-body-mb",
        type=float,
        default=defaults.max_body_bytes / 2**20,
        help="MiB of request body (413 over it; default %(default)g)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=defaults.timeout_s,
        help="seconds a request may take (default %(default)g)",
    )
    parser.add_argument(
        "--max-request-mp",
        type=float,
        default=defaults.max_request_pixels / 1e6,
        help="decoded megapixels a request may ask for (413 over it)",
    )
    parser.add_argument(
        "--large-image-mp",
        type=float,
        default=defaults.large_image_pixels / 1e6,
        help="images over this decode on at most half the decode threads",
    )
    parser.add_argument(
        "--fetch-threads",
        type=int,
        default=defaults.fetch_threads,
        help="threads downloading URLs, shared by all requests (default %(default)s)",
    )
    parser.add_argument(
        "--fetches-per-request",
        type=int,
        default=defaults.fetches_per_request,
        help="a request's share of the fetch threads",
    )
    parser.add_argument(
        "--download-deadline",
        type=float,
        default=defaults.download_deadline_s,
        help="seconds for all of a request's downloads",
    )
    parser.add_argument(
        "--max-maps", type=int, default=defaults.max_maps, help="images per POST /explain"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aiic serve", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    settings = Settings(
        model_dir=args.model,
        runtime=args.runtime,
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        max_images=args.max_images,
        max_body_bytes=int(args.max_body_mb * 2**20),
        timeout_s=args.timeout,
        max_request_pixels=int(args.max_request_mp * 1e6),
        large_image_pixels=int(args.large_image_mp * 1e6),
        fetch_threads=args.fetch_threads,
        fetches_per_request=args.fetches_per_request,
        download_deadline_s=args.download_deadline,
        max_maps=args.max_maps,
    )
    serve(settings, args.host, args.port, args.workers)


if __name__ == "__main__":
    run(main, "serve")
