"""Opportunistic batching, in-process with a counting runner: merged runs, split results, safe fallbacks."""

from __future__ import annotations

import threading
from typing import Mapping

import numpy as np

from tfship.server.batching import BatchingOptions, BatchScheduler, batch_rows


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
