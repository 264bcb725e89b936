"""13. `aiic serve` under hostile traffic: a normal client's p99 with hostile clients ÷ alone.

The exported backbone of the configs (random weights) under a head, served by `aiic serve` in its
own process on 127.0.0.1 with its default limits; the clients run in this process, on the same
cores. A normal client sends one small image at a time, as an upload or as a URL of a loopback
image host, and its latencies are taken alone and while HOSTILE_CLIENTS clients send, one
request after another,
- expensive images: cheap PNGs (about 10 KB) that decode to 81 million pixels each, as many a
  request as the per-request pixel budget admits (a request of 32 is refused with 413 at once);
- slow URLs: SLOW_URLS URLs a request to a host that drips its headers a byte a second.
The two levels take turns over a few rounds, so that the shared machine's busy moments fall on
both, and each level's latencies are pooled. Ratio = p99 with the hostile clients ÷ p99 alone;
target <= 3 for each kind. When a block ends, the hostile clients hang up mid-request, as
attackers do; the server's log is searched for tracebacks and counts the clients it saw go. Run
alone: `python -m benchmarks.hostile [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.project import compose_params, random_backbone, small_size
from benchmarks.serving import DRIP, expensive_png, image_host, server, synthetic_jpegs
from pipeline.core.tables import markdown_table

NAME = "serve_hostile"
TARGET = 3.0  # issue 29's
HOSTILE_CLIENTS = 4
SLOW_URLS = 32  # a hostile request's
EXPENSIVE_SIDE = 9000
SETTLE_S = 2.0  # for the hostile load to build up, and for its remains to clear after
STATUSES = ("statuses", "hostile_statuses")


async def normal_client(url: str, request: dict[str, Any], count: int) -> tuple[list, Counter]:
    """`count` requests one after another: their latencies and statuses ("unscored": a 200
    without a score)."""
    import httpx

    latencies, statuses = [], Counter()
    async with httpx.AsyncClient(timeout=120) as client:
        for _ in range(count):
            started = time.perf_counter()
            response = await client.post(f"{url}/predict", **request)
            latencies.append(time.perf_counter() - started)
            scored = response.status_code != 200 or response.json()["results"][0]["reason"] == ""
            statuses[str(response.status_code) if scored else "unscored"] += 1
    return latencies, statuses


async def hostile_client(url: str, request: dict[str, Any], statuses: Counter) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=120) as client:
        while True:
            statuses[str((await client.post(f"{url}/predict", **request)).status_code)] += 1


async def block(url: str, normal: dict, count: int, hostile: dict | None, level: dict) -> None:
    """`count` normal requests, with the hostile clients sending `hostile` meanwhile (if any),
    into `level` (latencies and statuses pooled over the rounds)."""
    clients = range(HOSTILE_CLIENTS if hostile else 0)
    hostiles = level["hostile_statuses"]
    tasks = [asyncio.ensure_future(hostile_client(url, hostile, hostiles)) for _ in clients]
    await asyncio.sleep(SETTLE_S if hostile else 0)
    try:
        latencies, statuses = await normal_client(url, normal, count)
    finally:
        for task in tasks:
            task.cancel()  # they hang up mid-request
        await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(SETTLE_S if hostile else 0)
    level["latencies"] += latencies
    level["statuses"].update(statuses)


def summary(level: dict) -> dict[str, Any]:
    latencies = 1000 * np.array(level["latencies"])
    return {
        "requests": len(latencies),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "max_ms": round(float(latencies.max()), 1),
        "statuses": dict(sorted(level["statuses"].items())),
        "hostile_statuses": dict(sorted(level["hostile_statuses"].items())),
    }


def run(work: Path, spec: dict[str, Any], head: dict[str, Any], quick: bool = False) -> dict:
    import httpx
    import psutil

    from benchmarks.inference import export
    from pipeline.serving.fetch import ALLOW_PRIVATE_ENV
    from pipeline.serving.serve import Settings

    work.mkdir(parents=True, exist_ok=True)
    load_average = [round(os.getloadavg()[0], 2)]
    export(spec, head, work / "export")
    normal = synthetic_jpegs(1, max(2 * spec["input_size"], 128), seed=1)[0]
    expensive = expensive_png(EXPENSIVE_SIDE)
    admitted = Settings().max_request_pixels // EXPENSIVE_SIDE**2
    count, rounds = (10, 1) if quick else (200, 4)
    log = work / "server.log"
    env = {ALLOW_PRIVATE_ENV: "1"}  # the loopback image host stands for a public one
    with contextlib.ExitStack() as stack:
        host = stack.enter_context(image_host({"normal.jpg": normal}))
        url, process = stack.enter_context(server(work / "export", env=env, log=log))
        rss = {"after_start_mib": psutil.Process(process.pid).memory_info().rss / 2**20}
        started = time.perf_counter()
        files = [("files", (f"x{i}.png", expensive)) for i in range(32)]
        over_budget = httpx.post(f"{url}/predict", files=files, timeout=60)
        refused_ms = 1000 * (time.perf_counter() - started)
        uploads = {"files": [("files", ("normal.jpg", normal))]}
        by_url = {"json": {"urls": [f"{host}/normal.jpg"]}}
        expensive_images = {"files": files[:admitted]}
        slow_urls = {"json": {"urls": [f"{host}{DRIP}"] * SLOW_URLS}}
        plans = {  # the normal request, then each level's hostile one
            "upload": (uploads, {"alone": None, "with_expensive_images": expensive_images}),
            "url": (by_url, {"alone": None, "with_slow_urls": slow_urls}),
        }
        pooled = {}
        for kind, (normal_request, hostile_requests) in plans.items():
            for _ in range(rounds):  # the levels in turn, so that the machine's moods fall on both
                for name, hostile_request in hostile_requests.items():
                    level = pooled.setdefault(f"{kind}_{name}", empty_level())
                    asyncio.run(block(url, normal_request, count // rounds, hostile_request, level))
            rss[f"after_{kind}_mib"] = psutil.Process(process.pid).memory_info().rss / 2**20
    text = log.read_text()
    levels = {key: summary(level) for key, level in pooled.items()}
    statuses = [Counter(level[key]) for level in levels.values() for key in STATUSES]
    return {
        "hostile_clients": HOSTILE_CLIENTS,
        "expensive_images_a_request": admitted,
        "slow_urls_a_request": SLOW_URLS,
        "load_average": [*load_average, round(os.getloadavg()[0], 2)],
        "over_budget": {"status": over_budget.status_code, "ms": round(refused_ms, 1)},
        "levels": levels,
        "rss_mib": {key: round(value, 1) for key, value in rss.items()},
        "server_5xx": sum(n for s in statuses for code, n in s.items() if code[0] == "5"),
        "log": {"tracebacks": text.count("Traceback"), "clients_gone": text.count("went away")},
        "rounds": rounds,
        "images_p99_ratio": ratio(levels["upload_with_expensive_images"], levels["upload_alone"]),
        "urls_p99_ratio": ratio(levels["url_with_slow_urls"], levels["url_alone"]),
    }


def ratio(hostile: dict[str, Any], alone: dict[str, Any]) -> float:
    return round(hostile["p99_ms"] / alone["p99_ms"], 3)


def empty_level() -> dict[str, Any]:
    return {"latencies": [], "statuses": Counter(), "hostile_statuses": Counter()}


def measure(context: Any) -> dict[str, Any]:
    """The exported backbone of the run's configs, at the run's input size, under params' head."""
    return run(context.work / NAME, context.exported, context.head(), context.quick)


def headline(result: dict[str, Any]) -> dict[str, Any]:
    kinds = ("images", "urls")
    return {f"serve_hostile_{kind}_p99_ratio": result[f"{kind}_p99_ratio"] for kind in kinds}


def targets(result: dict[str, Any]) -> list[tuple[str, str, Any, bool]]:
    sent = {"expensive images": result["images_p99_ratio"], "slow URLs": result["urls_p99_ratio"]}
    what = "13. normal p99 while hostile clients send {} ÷ alone"
    return [(what.format(kind), f"<= {TARGET}", x, x <= TARGET) for kind, x in sent.items()]


def render(result: dict[str, Any]) -> list[str]:
    r = result
    table = markdown_table(
        ["level", "normal p50 ms", "p99 ms", "max ms", "normal answers", "hostile answers"],
        [
            [
                name.replace("_", " "),
                level["p50_ms"],
                level["p99_ms"],
                level["max_ms"],
                level["statuses"],
                level["hostile_statuses"] or "",
            ]
            for name, level in r["levels"].items()
        ],
    )
    return [
        "## 13. `aiic serve` under hostile traffic",
        f"{r['hostile_clients']} hostile clients against one normal client (one small image a "
        f"request), `aiic serve`'s default limits, load average {r['load_average'][0]} before "
        f"and {r['load_average'][1]} after. "
        f"Expensive images: {r['expensive_images_a_request']} PNGs of about 10 KB a request that "
        f"decode to 81 million pixels each (32 of them are refused with "
        f"{r['over_budget']['status']} in {r['over_budget']['ms']} ms); slow URLs: "
        f"{r['slow_urls_a_request']} a request to a host that drips a byte a second. Normal p99 "
        f"÷ alone: **{r['images_p99_ratio']}** with expensive images, **{r['urls_p99_ratio']}** "
        f"with slow URLs. 5xx answers: {r['server_5xx']}; the server's log: "
        f"{r['log']['tracebacks']} tracebacks, {r['log']['clients_gone']} clients that went away"
        f" logged. Resident memory (MiB): {r['rss_mib']}.",
        table,
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args(argv)
    params = compose_params()
    spec = random_backbone(params["backbone"]["name"])
    if args.quick:
        spec["input_size"] = small_size(spec)
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(Path(tmp), spec, params["head"], args.quick), indent=2))


if __name__ == "__main__":
    main()
