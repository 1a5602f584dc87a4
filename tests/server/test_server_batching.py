"""Server-side batching, in-process with a counting runner: merged runs, split results, safe fallbacks, and
TF Serving's BatchingParameters (padding to allowed sizes, the batch timeout, the queue bound)."""

from __future__ import annotations

import threading
from typing import Mapping

import grpc
import numpy as np
import pytest

from tfship.server.batching import BatchingOptions, BatchScheduler, batch_rows
from tfship.server.status import ServingError


class CountingRunner:
    """y = 2x row-wise; the first call blocks until released so that later requests queue up behind it."""

    def __init__(self, batch_wise: bool = True):
        self.calls: list[int] = []
        self.first_call_entered = threading.Event()
        self.release_first_call = threading.Event()
        self.batch_wise = batch_wise

    def __call__(self, inputs: Mapping[str, np.ndarray], output_filter: tuple[str, ...]) -> dict[str, np.ndarray]:
        self.calls.append(len(inputs["x"]))
        if len(self.calls) == 1:
            self.first_call_entered.set()
            assert self.release_first_call.wait(30)
        if not self.batch_wise:
            return {"y": np.array(float(inputs["x"].sum()))}  # a scalar: cannot be split back per request
        return {"y": inputs["x"] * 2}


def _run_concurrently(batcher: BatchScheduler, runner: CountingRunner,
                      requests: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    results: list[dict[str, np.ndarray]] = [{} for _ in requests]

    def call(index: int) -> None:
        results[index] = batcher.run({"x": requests[index]}, ("y",))

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert runner.first_call_entered.wait(30)
    others = [threading.Thread(target=call, args=(i,)) for i in range(1, len(requests))]
    for thread in others:
        thread.start()
    for _ in range(300):  # bounded: until every other request is queued behind the first
        if batcher.queued_tasks() == len(others):
            break
        threading.Event().wait(0.01)
    runner.release_first_call.set()
    for thread in [first, *others]:
        thread.join(timeout=30)
    return results


def test_requests_queued_behind_a_run_are_merged_and_split_back() -> None:
    runner = CountingRunner()
    batcher = BatchScheduler(runner, "test")
    requests = [np.array([[1.0]]), np.array([[2.0], [3.0]]), np.array([[4.0]]), np.array([[5.0]])]
    results = _run_concurrently(batcher, runner, requests)
    assert runner.calls == [1, 4]  # the first alone, then the three queued ones (4 rows) in one run
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result["y"], request * 2)


def test_outputs_that_do_not_split_by_rows_are_redone_one_by_one() -> None:
    runner = CountingRunner(batch_wise=False)
    batcher = BatchScheduler(runner, "test")
    requests = [np.array([1.0]), np.array([2.0]), np.array([3.0, 4.0])]
    results = _run_concurrently(batcher, runner, requests)
    assert runner.calls == [1, 3, 1, 2]  # merged attempt (3 rows) refused, then each request alone
    assert [float(result["y"]) for result in results] == [1.0, 2.0, 7.0]


def test_only_inputs_sharing_a_first_dimension_can_merge() -> None:
    assert batch_rows({"a": np.zeros((3, 2)), "b": np.zeros((3,))}) == 3
    assert batch_rows({"a": np.zeros((3, 2)), "b": np.zeros((2,))}) is None
    assert batch_rows({"scalar": np.array(1)}) is None


def test_allowed_batch_sizes_pad_with_the_first_row_and_drop_the_padding() -> None:
    runner = CountingRunner()
    batcher = BatchScheduler(runner, "test", BatchingOptions(max_batch_size=8, allowed_batch_sizes=(2, 4, 8)))
    requests = [np.array([[1.0]]), np.array([[2.0]]), np.array([[3.0], [4.0]]), np.array([[5.0]])]
    results = _run_concurrently(batcher, runner, requests)
    assert runner.calls == [2, 4]  # 1 row padded to 2; then 4 rows exactly
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result["y"], request * 2)


def test_a_batch_waits_up_to_the_timeout_for_more_requests() -> None:
    runner = CountingRunner()
    runner.first_call_entered.set()
    runner.release_first_call.set()  # no blocking: only the timeout groups the requests
    batcher = BatchScheduler(runner, "test", BatchingOptions(max_batch_size=3, batch_timeout_micros=5_000_000))
    results: list[dict[str, np.ndarray]] = []
    threads = [threading.Thread(target=lambda v=v: results.append(batcher.run({"x": np.array([[v]])}, ("y",))))
               for v in (1.0, 2.0, 3.0)]
    for thread in threads:  # a full batch (3 rows) runs at once, long before the 5 s timeout
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert runner.calls == [3]
    assert sorted(float(r["y"][0, 0]) for r in results) == [2.0, 4.0, 6.0]


def test_too_large_requests_and_a_full_queue_are_refused() -> None:
    runner = CountingRunner()
    batcher = BatchScheduler(runner, "test", BatchingOptions(max_batch_size=2, max_enqueued_batches=1))
    with pytest.raises(ServingError) as too_large:
        batcher.run({"x": np.zeros((3, 1))}, ("y",))
    assert too_large.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Task size 3 is larger than maximum input batch size 2" in too_large.value.message
    first = threading.Thread(target=batcher.run, args=({"x": np.zeros((1, 1))}, ("y",)))
    first.start()
    assert runner.first_call_entered.wait(30)  # the first batch runs (blocked): the queue is empty again
    queued = threading.Thread(target=batcher.run, args=({"x": np.zeros((2, 1))}, ("y",)))  # fills the 1 batch
    queued.start()
    for _ in range(300):
        if batcher.queued_tasks() == 1:
            break
        threading.Event().wait(0.01)
    with pytest.raises(ServingError) as full:
        batcher.run({"x": np.zeros((1, 1))}, ("y",))
    assert full.value.code == grpc.StatusCode.UNAVAILABLE
    assert "queue to which this task was submitted is full" in full.value.message
    runner.release_first_call.set()
    first.join(timeout=30)
    queued.join(timeout=30)
    assert runner.calls == [1, 2]


@pytest.mark.parametrize(("options", "problem"), [
    (BatchingOptions(max_batch_size=4, allowed_batch_sizes=(2, 3)), "must equal max_batch_size"),
    (BatchingOptions(max_batch_size=4, allowed_batch_sizes=(4, 2, 4)), "increasing"),
    (BatchingOptions(num_batch_threads=0), "num_batch_threads must be at least 1"),
])
def test_inconsistent_parameters_are_named(options: BatchingOptions, problem: str) -> None:
    assert any(problem in found for found in options.problems())
