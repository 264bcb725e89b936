"""Worker threads shared fairly among the requests of `aiic serve`.

A request's jobs form a `Flow` with a queue of its own. A free worker takes the next job of the
flow that has been served the least work so far, each job counting its cost (the pixels it
decodes, or one download): start-time fair queueing (Goyal, Vin and Cheng, IEEE/ACM Transactions
on Networking 5(5), 1997), so that a request queueing many or expensive jobs delays a newcomer by
at most the jobs already running, never by its own queue. Two limits keep a flow or a kind of job
from taking every worker: `per_flow`, a request's share (its jobs running at once), and the
`heavy_workers`, the only workers that run jobs costing over `heavy_cost`, so that cheap jobs
always find a worker that no expensive one holds. The heavy workers run at a lower scheduling
priority (`heavy_nice`; on Linux a thread's nice value is its own, setpriority(2)), so that
expensive jobs take the CPU only as far as the cheap ones and the rest of the process leave it;
they take cheap jobs too when no heavy one waits. Cancelling a flow drops its queued jobs; a job
already running runs to its end (its caller stops it by other means, e.g. a deadline).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any


@dataclass
class _Job:
    function: Callable[..., Any]
    args: tuple[Any, ...]
    cost: float
    future: Future


class Flow:
    """One request's jobs on a FairPool."""

    def __init__(self, pool: FairPool) -> None:
        self.pool = pool
        self.jobs: deque[_Job] = deque()
        self.running = 0
        self.tag = 0.0  # the work it has been served, in the pool's virtual time
        self.cancelled = False

    def submit(self, function: Callable[..., Any], *args: Any, cost: float = 1.0) -> Future:
        """Run `function(*args)` on a worker in its fair turn; its Future (cancel it to drop it)."""
        return self.pool._submit(self, _Job(function, args, cost, Future()))

    def cancel(self) -> None:
        """Drop the queued jobs (their futures cancelled) and refuse new ones."""
        self.pool._cancel(self)


class FairPool:
    def __init__(
        self,
        workers: int,
        name: str,
        per_flow: int | None = None,
        heavy_cost: float = math.inf,
        heavy_workers: int | None = None,
        heavy_nice: int = 0,
    ) -> None:
        self.per_flow, self.heavy_cost = per_flow or workers, heavy_cost
        self._lock = threading.Condition()
        self._waiting: list[Flow] = []  # flows with queued jobs, in the order they began to wait
        self._virtual = 0.0  # the tag of the job a worker took last
        self._closed = False
        heavy = workers if heavy_workers is None else heavy_workers
        for index in range(workers):
            nice = heavy_nice if index < heavy else None  # None: takes cheap jobs only
            thread = threading.Thread(target=self._work, args=(nice,), daemon=True)
            thread.name = f"{name}-{index}"
            thread.start()

    def flow(self) -> Flow:
        return Flow(self)

    def shutdown(self) -> None:
        """Cancel every queued job and let the workers end once their jobs are done."""
        with self._lock:
            self._closed = True
            for flow in self._waiting:
                self._drop(flow)
            self._waiting.clear()
            self._lock.notify_all()

    def _submit(self, flow: Flow, job: _Job) -> Future:
        with self._lock:
            if self._closed or flow.cancelled:
                job.future.cancel()
                return job.future
            if not flow.jobs:  # it starts waiting now: no credit for the time it was idle
                flow.tag = max(flow.tag, self._virtual)
                self._waiting.append(flow)
            flow.jobs.append(job)
            self._lock.notify_all()  # not any one worker: it may not be one that may take it
        return job.future

    def _cancel(self, flow: Flow) -> None:
        with self._lock:
            flow.cancelled = True
            if flow in self._waiting:
                self._waiting.remove(flow)
            self._drop(flow)

    @staticmethod
    def _drop(flow: Flow) -> None:
        while flow.jobs:
            flow.jobs.popleft().future.cancel()

    def _take(self, heavy_worker: bool) -> tuple[Flow, _Job] | None:
        """The next job a worker may take: of the flow served least among those within their
        share; a heavy worker looks for a heavy job first."""
        kinds = (True, False) if heavy_worker else (False,)
        for heavy in kinds:
            ready = [
                flow
                for flow in self._waiting
                if flow.running < self.per_flow and (flow.jobs[0].cost > self.heavy_cost) == heavy
            ]
            if ready:
                chosen = min(ready, key=lambda flow: flow.tag)  # the first to wait, on a tie
                job = chosen.jobs.popleft()
                if not chosen.jobs:
                    self._waiting.remove(chosen)
                self._virtual = chosen.tag
                chosen.tag += job.cost
                chosen.running += 1
                return chosen, job
        return None

    def _work(self, nice: int | None) -> None:
        if nice:  # where the OS has no per-thread priority, the heavy workers keep the usual one
            with contextlib.suppress(AttributeError, OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        while True:
            with self._lock:
                while not self._closed and (taken := self._take(nice is not None)) is None:
                    self._lock.wait()
                if self._closed:
                    return
            flow, job = taken
            try:
                if job.future.set_running_or_notify_cancel():
                    try:
                        job.future.set_result(job.function(*job.args))
                    except BaseException as error:  # as concurrent.futures' own workers do
                        job.future.set_exception(error)
            finally:
                with self._lock:
                    flow.running -= 1
                    self._lock.notify_all()
