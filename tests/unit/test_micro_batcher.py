"""The micro-batcher: coalescing, splitting results back, failures, limits and shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pytest

from loopline.core.errors import ConflictError, InvalidArgumentError, UserCodeError
from loopline.serving.batching import MicroBatcher

T = TypeVar("T")


def run(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await factory()

    return asyncio.run(main())


class Recorder:
    """A model that doubles column ``x`` and remembers the batches it saw."""

    def __init__(self, delay: float = 0.0, fail_on: int | None = None) -> None:
        self.batches: list[pd.DataFrame] = []
        self.threads: set[str] = set()
        self.delay = delay
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, frame: pd.DataFrame) -> Any:
        with self.lock:
            self.batches.append(frame)
            self.threads.add(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and (frame["x"] == self.fail_on).any():
            raise ValueError(f"boom on {self.fail_on}")
        return (frame["x"] * 2).to_numpy()


def frame(*values: int) -> pd.DataFrame:
    return pd.DataFrame({"x": list(values)})


def test_concurrent_submits_coalesce_into_fewer_predict_calls_and_get_their_own_rows() -> None:
    model = Recorder()

    async def go() -> list[Any]:
        batcher = MicroBatcher(model, max_rows=64, max_wait_ms=5)
        try:
            return await asyncio.gather(*(batcher.submit(frame(i, i + 1000)) for i in range(20)))
        finally:
            await batcher.close()

    results = run(go)
    assert len(model.batches) < 20
    assert sum(len(b) for b in model.batches) == 40
    for i, result in enumerate(results):
        assert list(result) == [2 * i, 2 * (i + 1000)]


def test_results_are_split_back_in_order_for_lists_series_and_frames() -> None:
    def as_list(f: pd.DataFrame) -> list[int]:
        return [int(v) for v in f["x"]]

    def as_series(f: pd.DataFrame) -> pd.Series:
        return f["x"] + 1

    def as_frame(f: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"y": f["x"] * 3})

    async def go(predict: Callable[[pd.DataFrame], Any]) -> list[Any]:
        batcher = MicroBatcher(predict, max_rows=100)
        try:
            return await asyncio.gather(*(batcher.submit(frame(*range(i, i + 3)))
                                          for i in range(0, 30, 3)))
        finally:
            await batcher.close()

    lists = run(lambda: go(as_list))
    assert lists == [list(range(i, i + 3)) for i in range(0, 30, 3)]
    series = run(lambda: go(as_series))
    assert [list(s) for s in series] == [[v + 1 for v in range(i, i + 3)]
                                         for i in range(0, 30, 3)]
    assert all(list(s.index) == [0, 1, 2] for s in series)
    frames = run(lambda: go(as_frame))
    assert [list(f["y"]) for f in frames] == [[3 * v for v in range(i, i + 3)]
                                              for i in range(0, 30, 3)]


def test_a_failing_predict_fails_exactly_the_callers_of_its_batch() -> None:
    model = Recorder(fail_on=13)

    async def go() -> tuple[list[Any], list[Any]]:
        batcher = MicroBatcher(model, max_rows=4)
        try:
            first = await asyncio.gather(*(batcher.submit(frame(i)) for i in range(12, 20)),
                                         return_exceptions=True)
            after = await asyncio.gather(*(batcher.submit(frame(i)) for i in range(4)))
            return first, after
        finally:
            await batcher.close()

    first, after = run(go)
    failed_batch = next(b for b in model.batches if 13 in set(b["x"]))
    failed = set(failed_batch["x"])
    for value, outcome in zip(range(12, 20), first, strict=True):
        if value in failed:
            assert isinstance(outcome, ValueError)
        else:
            assert list(outcome) == [2 * value]
    assert 1 < len(failed) < 8
    assert [list(r) for r in after] == [[0], [2], [4], [6]]


def test_batches_never_exceed_max_rows_and_a_larger_frame_runs_alone() -> None:
    model = Recorder()

    async def go() -> list[Any]:
        batcher = MicroBatcher(model, max_rows=5, max_wait_ms=1)
        try:
            small = [batcher.submit(frame(i, i)) for i in range(10)]
            big = batcher.submit(frame(*range(100, 112)))
            return await asyncio.gather(*small, big, *(batcher.submit(frame(i)) for i in range(7)))
        finally:
            await batcher.close()

    results = run(go)
    sizes = [len(b) for b in model.batches]
    assert 12 in sizes
    assert all(size <= 5 for size in sizes if size != 12)
    assert [len(r) for r in results] == [2] * 10 + [12] + [1] * 7
    assert list(results[10]) == [2 * v for v in range(100, 112)]


def test_frames_with_other_columns_or_dtypes_are_not_mixed() -> None:
    model = Recorder()

    async def go() -> list[Any]:
        batcher = MicroBatcher(model, max_rows=100)
        try:
            return await asyncio.gather(
                batcher.submit(frame(1)), batcher.submit(pd.DataFrame({"x": [2.5]})),
                batcher.submit(pd.DataFrame({"x": [3], "z": [0]})), batcher.submit(frame(4)))
        finally:
            await batcher.close()

    results = run(go)
    assert [list(r) for r in results] == [[2], [5.0], [6], [8]]
    for batch in model.batches:
        assert len({str(dtype) for dtype in batch.dtypes}) == 1
    assert all(b["x"].dtype != np.float64 or len(b) == 1 for b in model.batches)


def test_a_lone_request_is_answered_within_the_wait_bound() -> None:
    model = Recorder()

    async def go() -> list[float]:
        batcher = MicroBatcher(model, max_rows=64, max_wait_ms=50)
        elapsed = []
        try:
            for i in range(5):
                start = time.perf_counter()
                await batcher.submit(frame(i))
                elapsed.append(time.perf_counter() - start)
                await asyncio.gather(batcher.submit(frame(1)), batcher.submit(frame(2)))
        finally:
            await batcher.close()
        return elapsed

    elapsed = run(go)
    assert max(elapsed) < 0.05 + 1.0  # the bound plus a generous scheduling allowance


def test_with_max_rows_one_or_less_every_frame_is_scored_alone() -> None:
    for max_rows in (1, 0, -3):
        model = Recorder()

        async def go(size: int = max_rows, predict: Recorder = model) -> list[Any]:
            batcher = MicroBatcher(predict, max_rows=size)
            assert not batcher.enabled
            try:
                return await asyncio.gather(*(batcher.submit(frame(i)) for i in range(6)))
            finally:
                await batcher.close()

        results = run(go)
        assert [list(r) for r in results] == [[2 * i] for i in range(6)]
        assert [len(b) for b in model.batches] == [1] * 6


def test_predict_runs_in_one_worker_thread_off_the_event_loop() -> None:
    model = Recorder(delay=0.001)

    async def go() -> None:
        batcher = MicroBatcher(model, max_rows=3)
        try:
            await asyncio.gather(*(batcher.submit(frame(i)) for i in range(12)))
        finally:
            await batcher.close()

    run(go)
    assert len(model.threads) == 1
    assert threading.main_thread().name not in model.threads


def test_counters_add_up_and_on_batch_sees_every_call() -> None:
    seen: list[int] = []

    async def go() -> MicroBatcher:
        batcher = MicroBatcher(Recorder(), max_rows=4, on_batch=seen.append)
        try:
            await asyncio.gather(*(batcher.submit(frame(i)) for i in range(10)))
        finally:
            await batcher.close()
        return batcher

    batcher = run(go)
    assert batcher.rows == sum(seen) == 10
    assert batcher.batches == len(seen) >= 3
    assert batcher.queue_depth == 0


def test_a_wrong_number_of_predictions_fails_the_batch_with_a_clear_error() -> None:
    async def go() -> list[Any]:
        batcher = MicroBatcher(lambda f: [1], max_rows=8)
        try:
            return await asyncio.gather(batcher.submit(frame(1)), batcher.submit(frame(2)),
                                        return_exceptions=True)
        finally:
            await batcher.close()

    outcomes = run(go)
    assert all(isinstance(o, UserCodeError) and "one prediction per row" in str(o)
               for o in outcomes)


def test_close_leaves_no_task_and_later_submits_are_refused() -> None:
    async def go() -> None:
        batcher = MicroBatcher(Recorder(), max_rows=8)
        await batcher.submit(frame(1))
        await batcher.close()
        await batcher.close()  # idempotent
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == []
        with pytest.raises(ConflictError, match="closed"):
            await batcher.submit(frame(2))

    run(go)


def test_close_before_any_submit_and_a_cancelled_caller_are_harmless() -> None:
    model = Recorder(delay=0.05)

    async def go() -> None:
        await MicroBatcher(model).close()
        batcher = MicroBatcher(model, max_rows=8)
        slow = asyncio.ensure_future(batcher.submit(frame(1)))
        await asyncio.sleep(0.01)  # frame(1) is being scored
        doomed = asyncio.ensure_future(batcher.submit(frame(2)))
        kept = asyncio.ensure_future(batcher.submit(frame(3)))
        await asyncio.sleep(0)
        doomed.cancel()
        assert list(await kept) == [6]
        assert list(await slow) == [2]
        await batcher.close()

    run(go)
    assert all(2 not in set(b["x"]) for b in model.batches)


def test_a_negative_wait_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidArgumentError, match="max_wait_ms"):
        MicroBatcher(Recorder(), max_wait_ms=-1)


def test_a_full_queue_refuses_at_once_and_a_lone_large_frame_still_fits() -> None:
    from loopline.serving.batching import QueueFull

    async def scenario() -> tuple[list[Any], int]:
        batcher = MicroBatcher(Recorder(delay=0.05), max_rows=1, max_queue_rows=3)
        lone = await batcher.submit(frame(*range(10)))  # larger than the bound, but alone
        tasks = [asyncio.ensure_future(batcher.submit(frame(i))) for i in range(5)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.close()
        return results, len(lone)

    results, lone_rows = run(scenario)
    assert lone_rows == 10
    refused = [r for r in results if isinstance(r, QueueFull)]
    assert len(refused) == 2 and refused[0].status == 503
    assert refused[0].field == "max_queue_rows"
    assert [list(r) for r in results if not isinstance(r, Exception)] == [[0], [2], [4]]


class _Model:
    """A servable stand-in: ``uri`` and ``predict`` (doubles ``x``) are all a runner uses."""

    batchable = True

    def __init__(self, uri: str, delay: float = 0.0) -> None:
        self.uri = uri
        self.predict = Recorder(delay)


def test_a_runner_whose_version_left_the_table_closes_once_its_request_ends() -> None:
    from loopline.serving.workers import RunnerPool

    async def scenario() -> tuple[list[int], bool, bool, tuple[str, ...]]:
        pool = RunnerPool((0, 2.0), lambda uri: lambda rows: None)
        old, new = _Model("models:/m/1", delay=0.05), _Model("models:/m/2")
        runner = pool.acquire(old, {old.uri: old})
        pending = asyncio.ensure_future(runner.predict(frame(3)))
        await asyncio.sleep(0)
        pool.retain({new.uri: new})  # the table moved on while the request is in flight
        closed_while_busy = runner.closed
        result = list(await pending)
        pool.release(runner)
        await asyncio.sleep(0.01)
        live = pool.acquire(new, {new.uri: new})
        stale = pool.acquire(_Model(new.uri), {new.uri: new})  # routed by an older table
        pool.release(stale)
        pool.release(live)
        await asyncio.sleep(0.01)
        uris = pool.uris
        await pool.close()
        return result, closed_while_busy, runner.closed and stale.closed, uris

    result, closed_while_busy, closed_after, uris = run(scenario)
    assert result == [6] and not closed_while_busy and closed_after
    assert uris == ("models:/m/2",)


class NegativeCheck:
    """A signature-like check: refuses a frame holding a negative ``x``; counts its calls.

    Checks compare equal, as the server's per-version checks do, so a batch may share one.
    """

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, frame: pd.DataFrame) -> None:
        self.calls.append(len(frame))
        if (frame["x"] < 0).any():
            raise InvalidArgumentError("x", "must not be negative")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NegativeCheck)

    def __hash__(self) -> int:
        return 0


def _gather_with_check(model: Recorder, check: NegativeCheck, *values: int) -> list[Any]:
    async def go() -> list[Any]:
        batcher = MicroBatcher(model, max_rows=64, max_wait_ms=50)
        blocker = asyncio.create_task(batcher.submit(frame(0)))  # occupies the worker
        await asyncio.sleep(0.01)
        try:
            return await asyncio.gather(
                blocker, *(batcher.submit(frame(v), check) for v in values),
                return_exceptions=True)
        finally:
            await batcher.close()

    return run(go)


def test_a_frame_whose_check_fails_gets_its_own_error_and_the_others_are_scored() -> None:
    model, check = Recorder(delay=0.05), NegativeCheck()
    results = _gather_with_check(model, check, 1, 2, -3, 4)
    assert isinstance(results[3], InvalidArgumentError)
    assert [list(r) for r in (results[1], results[2], results[4])] == [[2], [4], [8]]
    scored = [sorted(b["x"]) for b in model.batches[1:]]
    assert scored == [[1, 2, 4]]  # one predict call, without the refused row


def test_equal_checks_run_once_on_the_joined_batch() -> None:
    model, check = Recorder(delay=0.05), NegativeCheck()
    results = _gather_with_check(model, check, 1, 2, 3)
    assert [list(r) for r in results[1:]] == [[2], [4], [6]]
    assert check.calls == [3]  # one check of the three joined rows
    assert len(model.batches) == 2  # the blocker's, then one for the three
