"""Scoring the images of concurrent requests in shared forward passes (`aiic serve`): one thread
runs the model on whatever is queued, waiting at most a short window for more while other
requests are still being decoded, up to a maximum batch, so that the server's throughput under
load approaches the model's batched throughput while a lone request does not wait at all."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

logger = logging.getLogger(__name__)


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
            start = 0
            for job_images, future in jobs:
                future.set_result(scores[start : start + len(job_images)])
                start += len(job_images)
