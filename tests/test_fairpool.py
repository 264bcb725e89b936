"""The fair worker pool of `aiic serve`: results, fair turns by cost, a flow's share, the heavy
jobs' limit, and cancelling a flow's queued jobs."""

import os
import threading
import time

import pytest

from pipeline.serving.fairpool import FairPool


def blocked_pool(workers, **limits):
    """A pool whose jobs record their start and wait for `release`."""
    pool, release, started = FairPool(workers, "test", **limits), threading.Event(), []
    lock = threading.Lock()

    def job(name):
        with lock:
            started.append(name)
        assert release.wait(10)
        return name

    return pool, release, started, job


def wait_for(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_jobs_return_their_results_and_exceptions():
    pool = FairPool(2, "test")
    flow = pool.flow()
    assert [flow.submit(pow, 2, n).result(5) for n in range(4)] == [1, 2, 4, 8]
    with pytest.raises(ZeroDivisionError):
        flow.submit(divmod, 1, 0).result(5)
    pool.shutdown()


def test_a_newcomer_goes_before_the_queue_of_an_expensive_flow():
    pool, release, started, job = blocked_pool(1)
    greedy, newcomer = pool.flow(), pool.flow()
    futures = [greedy.submit(job, f"greedy{i}", cost=1000) for i in range(5)]
    wait_for(lambda: started == ["greedy0"])
    futures.append(newcomer.submit(job, "newcomer", cost=1))
    release.set()
    for future in futures:
        future.result(5)
    assert started == ["greedy0", "newcomer", "greedy1", "greedy2", "greedy3", "greedy4"]
    pool.shutdown()


def test_cheap_flows_take_turns_in_proportion_to_cost():
    pool, release, started, job = blocked_pool(1)
    blocker, big, small = pool.flow(), pool.flow(), pool.flow()
    first = blocker.submit(job, "blocker")
    wait_for(lambda: started == ["blocker"])
    futures = [big.submit(job, "big", cost=4) for _ in range(3)]
    futures += [small.submit(job, "small", cost=1) for _ in range(8)]
    release.set()
    for future in [first, *futures]:
        future.result(5)
    # every four small jobs' worth of work, one big job
    assert started[1:] == ["big", *["small"] * 4, "big", *["small"] * 4, "big"]
    pool.shutdown()


def test_a_flow_runs_at_most_its_share_at_once():
    pool, release, started, job = blocked_pool(6, per_flow=2)
    greedy, other = pool.flow(), pool.flow()
    futures = [greedy.submit(job, f"greedy{i}") for i in range(5)]
    futures += [other.submit(job, f"other{i}") for i in range(2)]
    wait_for(lambda: len(started) == 4)
    time.sleep(0.1)  # nothing else starts: both flows are at their share
    assert sorted(started) == ["greedy0", "greedy1", "other0", "other1"]
    release.set()
    assert [future.result(5) for future in futures[:5]] == [f"greedy{i}" for i in range(5)]
    pool.shutdown()


def test_heavy_jobs_leave_workers_for_cheap_ones():
    pool, release, started, job = blocked_pool(2, heavy_cost=100, heavy_workers=1)
    heavy, light = pool.flow(), pool.flow()
    futures = [heavy.submit(job, f"heavy{i}", cost=1000) for i in range(3)]
    wait_for(lambda: started == ["heavy0"])
    futures.append(light.submit(job, "light", cost=1))
    wait_for(lambda: started == ["heavy0", "light"])  # the second worker, not heavy1
    release.set()
    assert [future.result(5) for future in futures] == ["heavy0", "heavy1", "heavy2", "light"]
    pool.shutdown()


def test_cancelling_a_flow_drops_its_queued_jobs():
    pool, release, started, job = blocked_pool(1)
    flow = pool.flow()
    running = flow.submit(job, "running")
    wait_for(lambda: started == ["running"])
    queued = [flow.submit(job, f"queued{i}") for i in range(3)]
    flow.cancel()
    assert all(future.cancelled() for future in queued)
    assert flow.submit(job, "late").cancelled()
    release.set()
    assert running.result(5) == "running"  # a running job runs to its end
    after = pool.flow().submit(job, "after")
    assert after.result(5) == "after" and started == ["running", "after"]
    pool.shutdown()


def test_a_future_cancelled_by_its_caller_is_skipped():
    pool, release, started, job = blocked_pool(1)
    flow = pool.flow()
    flow.submit(job, "first")
    wait_for(lambda: started == ["first"])
    skipped, kept = flow.submit(job, "skipped"), flow.submit(job, "kept")
    skipped.cancel()  # as asyncio.wrap_future's cancellation does
    release.set()
    assert kept.result(5) == "kept" and started == ["first", "kept"]
    pool.shutdown()


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="no per-thread priority here")
def test_heavy_jobs_run_at_the_lower_priority_and_cheap_ones_do_not():
    def priority(_):
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    pool, release, started, job = blocked_pool(2, heavy_cost=100, heavy_workers=1, heavy_nice=5)
    usual = os.getpriority(os.PRIO_PROCESS, 0)
    heavy, light = pool.flow(), pool.flow()
    assert heavy.submit(priority, None, cost=1000).result(5) == min(usual + 5, 19)
    blocker = heavy.submit(job, "heavy", cost=1000)  # holds the heavy worker
    wait_for(lambda: started == ["heavy"])
    assert light.submit(priority, None).result(5) == usual
    release.set()
    blocker.result(5)
    pool.shutdown()
