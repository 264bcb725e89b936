"""What the `aiic serve` benchmarks and its slow catalogue test share: the server in its own process
on 127.0.0.1, a loopback image host (one of its paths drips its answer a byte a second), synthetic
JPEGs, and the cheap PNG that decodes to many pixels."""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.project import ROOT

DRIP = "/drip"  # the image host's path that sends its headers a byte a second, for ever


def synthetic_jpegs(count: int, size: int, seed: int = 0) -> list[bytes]:
    """Smooth colour noise as JPEG, larger than the model's input so that resizing is measured."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def expensive_png(side: int = 9000) -> bytes:
    """A one-bit black PNG of side x side pixels: about 10 KB that decode to side² pixels (81
    million at 9000, under Pillow's bomb limit), a second of a core to decode and resize."""
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def server(
    model: Path, *options: str, env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`aiic serve --model model *options` on a free port of 127.0.0.1, its output in `log`;
    yields its base URL and process once /healthz answers 200, and stops it after."""
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "pipeline", "serve", "--model", str(model)]
    command += ["--port", str(port), *options]
    variables = {**os.environ, "PYTHONPATH": str(ROOT), "AIIC_LOOPBACK_ONLY": "1", **(env or {})}
    with open(log or os.devnull, "w") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=variables, stdout=output, stderr=output)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 300
    try:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"aiic serve did not start (exit status {process.poll()})")
            time.sleep(0.5)
        yield url, process
    finally:
        process.terminate()
        process.wait(30)


@contextlib.contextmanager
def image_host(files: dict[str, bytes], redirects: dict[str, str] | None = None) -> Iterator[str]:
    """A loopback web server of `files` (GET /name), `redirects` (GET /name: a 302 to the
    Location given, as it is) and DRIP; yields its base URL."""

    class Host(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            with contextlib.suppress(OSError):  # the client hung up
                if self.path == DRIP:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                    while True:
                        self.wfile.write(b"a")
                        self.wfile.flush()
                        time.sleep(1)
                if self.path.lstrip("/") in (redirects or {}):
                    self.send_response(302)
                    self.send_header("Location", redirects[self.path.lstrip("/")])
                    self.end_headers()
                    return
                body = files.get(self.path.lstrip("/"))
                self.send_response(200 if body else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Host)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
