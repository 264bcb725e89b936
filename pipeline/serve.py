"""`aiic serve`: the exported model behind an HTTP API (FastAPI on uvicorn).

POST /predict takes multipart `files` or JSON {"urls": [...]} and answers one result per image, in
request order, with the numbers `aiic predict` gives: the same decoding, size check and resizing
(pipeline.images), the same SSRF-safe fetcher for URLs (pipeline.fetch), the same model. POST
/explain takes the same inputs, at most `max_maps` images, and adds each image's occlusion map
(pipeline.occlusion): its grid of numbers, the image's pixels it covers, and with ?png=true the
map drawn over the image; the covered copies go through the same micro-batcher, under the same
limits. GET /healthz answers 200 once the model is loaded, GET /model its model.json.

Images of concurrent requests are scored together: one thread runs the model on whatever is
queued, waiting at most a short window for more while other requests are still being decoded,
up to a maximum batch, so that the server's throughput under load approaches the model's batched
throughput while a lone request does not wait at all.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from pipeline.entry import run
from pipeline.errors import AiicError
from pipeline.fetch import FetchRefused, shorten
from pipeline.images import INPUT_MODES, UnreadableImage, decode, load_for_model, shape_for_model
from pipeline.inference import RUNTIMES, describe, exported_files, forward, load_exported, verdict
from pipeline.occlusion import Occlusion, map_from_scores, occlusion_copies
from pipeline.overlay import map_png
from pipeline.paths import EXPORT_DIR
from pipeline.predict import load_source, url_for_model

MAX_PARTS = 10_000  # multipart parts parsed before Starlette refuses the body
SETTINGS_ENV = "AIIC_SERVE_SETTINGS"  # how the settings reach uvicorn's worker processes
logger = logging.getLogger(__name__)


@dataclass
class Settings:
    model_dir: str = str(EXPORT_DIR)
    runtime: str = "keras"
    max_batch: int = 32
    batch_wait_ms: float = 5.0
    max_images: int = 32  # per request
    max_body_bytes: int = 32 * 1024 * 1024
    timeout_s: float = 60.0  # per request; a URL fetch alone may take pipeline.fetch's 30 s
    max_maps: int = 4  # images per POST /explain: each map is grid * grid + 1 forward passes
    decode_threads: int = field(default_factory=lambda: os.cpu_count() or 2)
    fetch_threads: int = 16


class BodyTooLarge(Exception):
    """The request body passed Settings.max_body_bytes while it arrived."""


class MicroBatcher:
    """Scores the images of concurrent requests in shared forward passes on one thread.

    `expecting()` says whether more images are on their way (requests admitted but still decoding
    or fetching): only then does a batch wait, at most `wait_s`, for them.
    """

    def __init__(
        self,
        score: Callable[[np.ndarray], np.ndarray],
        max_batch: int,
        wait_s: float,
        expecting: Callable[[], bool],
    ) -> None:
        self.score, self.max_batch, self.wait_s, self.expecting = (
            score,
            max_batch,
            wait_s,
            expecting,
        )
        self.queue: queue.Queue[tuple[np.ndarray, Future] | None] = queue.Queue()
        self.batch_sizes: list[int] = []  # images per forward pass, for the load test's check
        self.thread = threading.Thread(target=self._run, name="aiic-batcher", daemon=True)
        self.thread.start()

    async def submit(self, images: np.ndarray) -> np.ndarray:
        """P(real) of `images` (a uint8 batch), once a forward pass has scored them."""
        future: Future = Future()
        self.queue.put((images, future))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()

    def _gather(self, first: tuple[np.ndarray, Future]) -> list[tuple[np.ndarray, Future]]:
        jobs, count = [first], len(first[0])
        deadline = time.monotonic() + self.wait_s
        while count < self.max_batch:
            try:
                if self.expecting():
                    job = self.queue.get(timeout=max(deadline - time.monotonic(), 0.0))
                else:
                    job = self.queue.get_nowait()
            except queue.Empty:
                break
            if job is None:  # closing: finish this batch, then stop
                self.queue.put(None)
                break
            jobs.append(job)
            count += len(job[0])
        return jobs

    def _run(self) -> None:
        while (first := self.queue.get()) is not None:
            # a request that timed out has cancelled its future: its images are not scored
            jobs = [job for job in self._gather(first) if job[1].set_running_or_notify_cancel()]
            if not jobs:
                continue
            images = np.concatenate([job[0] for job in jobs])
            try:
                scores = np.concatenate(
                    [
                        self.score(images[start : start + self.max_batch])
                        for start in range(0, len(images), self.max_batch)
                    ]
                )
            except Exception as error:  # a failed forward pass fails its requests, not the server
                logger.exception("forward pass failed")
                for _, future in jobs:
                    future.set_exception(error)
                continue
            self.batch_sizes.append(len(images))
            start = 0
            for job_images, future in jobs:
                future.set_result(scores[start : start + len(job_images)])
                start += len(job_images)


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


def refusal(kind: str, outcome: Any) -> str:
    """Why an input was not scored ("" where `outcome`, its decoding's result, is usable);
    an unexpected exception is raised."""
    if isinstance(outcome, UnreadableImage):
        return str(outcome) if kind == "url" else outcome.reason
    if isinstance(outcome, FetchRefused):
        return str(outcome)
    if isinstance(outcome, BaseException):
        raise outcome
    return ""


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
        state["decoders"] = ThreadPoolExecutor(settings.decode_threads, "aiic-decode")
        state["fetchers"] = ThreadPoolExecutor(settings.fetch_threads, "aiic-fetch")
        app.state.batcher = state["batcher"]
        yield
        state["batcher"].close()
        state["decoders"].shutdown(cancel_futures=True)
        state["fetchers"].shutdown(wait=False, cancel_futures=True)

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

    async def inputs(request: Request) -> list[tuple[str, str, bytes | str]]:
        """(name, kind, payload) per image: kind "file" with its bytes or "url" with the URL."""
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            # Starlette's own caps on parts answer 400; ours, on images, is the documented 413.
            form = await request.form(max_files=MAX_PARTS, max_fields=MAX_PARTS)
            files = [item for item in form.getlist("files") if isinstance(item, UploadFile)]
            return [(item.filename or "", "file", await item.read()) for item in files]
        if content_type.startswith("application/json"):
            try:
                body = json.loads(await request.body())
            except ValueError as error:
                raise HTTPException(400, f"the body is not JSON: {error}") from error
            urls = body.get("urls") if isinstance(body, dict) else None
            if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
                raise HTTPException(400, 'expected {"urls": ["https://...", ...]}')
            return [(shorten(url), "url", url) for url in urls]
        raise HTTPException(415, 'send multipart/form-data `files` or JSON {"urls": [...]}')

    def prepared(kind: str, payload: bytes | str) -> np.ndarray:
        info = state["info"]
        if kind == "url":
            return url_for_model(str(payload), info)
        return load_for_model(
            payload, info["input_size"], info["input_mode"], info.get("min_size", 0)
        )

    def prepared_for_map(kind: str, payload: bytes | str) -> tuple[Any, np.ndarray]:
        """The decoded image and the model's input of it, as `prepared` makes the input."""
        info = state["info"]
        if kind == "url":
            return load_source(str(payload), info)
        image = decode(payload)
        size, mode = info["input_size"], info["input_mode"]
        return image, shape_for_model(image, size, mode, "<bytes>", info.get("min_size", 0))

    async def prepare(
        request: Request, limit: int = settings.max_images, load: Callable = prepared
    ) -> tuple[list[tuple[str, str, Any]], list[Any]]:
        """The request's images (at most `limit`), each decoded and shaped (or fetched) on a
        worker thread by `load`: its result, or the exception that says why it cannot be
        scored."""
        items = await inputs(request)
        if not items:
            raise HTTPException(400, "no images: send `files` or `urls`")
        if len(items) > limit:
            raise HTTPException(413, f"{len(items)} images, over {limit} a request")
        loop = asyncio.get_running_loop()
        jobs = [
            loop.run_in_executor(
                state["fetchers" if kind == "url" else "decoders"], load, kind, payload
            )
            for _, kind, payload in items
        ]
        return items, await asyncio.gather(*jobs, return_exceptions=True)

    async def answer(request: Request) -> dict[str, Any]:
        state["preparing"] += 1
        try:
            items, outcomes = await prepare(request)
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
            results.append(result(name, p_real.get(index), refusal(kind, outcome), threshold))
        return {"results": results}

    async def within_time(work: Any) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(work, settings.timeout_s)
        except asyncio.TimeoutError as error:  # not TimeoutError itself before Python 3.11
            raise HTTPException(504, f"the request took over {settings.timeout_s:g} s") from error

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        return await within_time(answer(request))

    async def explained(request: Request, png: bool) -> dict[str, Any]:
        occlusion, info = state["occlusion"], state["info"]
        if isinstance(occlusion, str):
            raise HTTPException(404, occlusion)
        state["preparing"] += 1
        try:
            items, outcomes = await prepare(request, settings.max_maps, prepared_for_map)
        finally:
            state["preparing"] -= 1
        good = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, tuple)]
        loop, decoders = asyncio.get_running_loop(), state["decoders"]
        copies = await asyncio.gather(
            *(
                loop.run_in_executor(decoders, occlusion_copies, outcomes[i][1], occlusion)
                for i in good
            )
        )
        scores = await state["batcher"].submit(np.concatenate(copies)) if good else []
        parts = np.split(np.asarray(scores), len(good)) if good else []
        maps = {
            i: map_from_scores(part, occlusion.grid) for i, part in zip(good, parts, strict=True)
        }
        region_of, threshold = INPUT_MODES[info["input_mode"]].region, info["threshold"]
        results = []
        for index, ((name, kind, _), outcome) in enumerate(zip(items, outcomes, strict=True)):
            if index not in maps:
                results.append(result(name, None, refusal(kind, outcome), threshold))
                continue
            (image, _), (p_real, heat) = outcome, maps[index]
            region = region_of(image.width, image.height, info["input_size"])
            image_map: dict[str, Any] = {"grid": heat.round(6).tolist(), "region": list(region)}
            if png:
                picture = await loop.run_in_executor(decoders, map_png, image, heat, region)
                image_map["png"] = base64.b64encode(picture).decode()
            results.append({**result(name, p_real, "", threshold), "map": image_map})
        return {"results": results, "meaning": occlusion.meaning}

    @app.post("/explain")
    async def explain(request: Request, png: bool = False) -> dict[str, Any]:
        return await within_time(explained(request, png))

    return app


def app_from_environment() -> FastAPI:
    """uvicorn's factory in each worker process (--workers > 1): settings from SETTINGS_ENV."""
    return create_app(Settings(**json.loads(os.environ[SETTINGS_ENV])))


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    import uvicorn

    exported_files(Path(settings.model_dir), settings.runtime)  # a missing model fails here, now
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port)
        return
    os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
    uvicorn.run(
        "pipeline.serve:app_from_environment", factory=True, host=host, port=port, workers=workers
    )


def main(argv: list[str] | None = None) -> None:
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="aiic serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1: behind a reverse proxy")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default=defaults.model_dir, help="exported model folder")
    parser.add_argument("--runtime", choices=tuple(RUNTIMES), default=defaults.runtime)
    parser.add_argument("--max-batch", type=int, default=defaults.max_batch)
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=defaults.batch_wait_ms,
        help="how long a batch waits for images of requests still being decoded",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes, each with the model")
    parser.add_argument("--max-images", type=int, default=defaults.max_images)
    parser.add_argument("--max-body-mb", type=float, default=defaults.max_body_bytes / 2**20)
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s, help="seconds")
    parser.add_argument(
        "--max-maps", type=int, default=defaults.max_maps, help="images per POST /explain"
    )
    args = parser.parse_args(argv)
    settings = Settings(
        model_dir=args.model,
        runtime=args.runtime,
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        max_images=args.max_images,
        max_body_bytes=int(args.max_body_mb * 2**20),
        timeout_s=args.timeout,
        max_maps=args.max_maps,
    )
    serve(settings, args.host, args.port, args.workers)


if __name__ == "__main__":
    run(main, "serve")
