"""Opportunistic batching (--enable_batching): requests that arrive while a signature is busy run together.

No request waits for a batch to fill: a worker takes whatever is queued when the previous run ends, so one
request alone costs one thread hand-off, and eight concurrent ones cost about one model call instead of eight.
Requests are merged only when their inputs agree on dtype and on every dimension but the first; a merged run
whose outputs do not split back by batch size (a model that is not batch-wise) is redone one request at a time.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

Arrays = dict[str, np.ndarray]
Runner = Callable[[Mapping[str, np.ndarray], tuple[str, ...]], Arrays]

MAX_ROWS_PER_RUN = 256


@dataclass
class _Pending:
    inputs: Mapping[str, np.ndarray]
    output_filter: tuple[str, ...]
    rows: int
    done: threading.Event = field(default_factory=threading.Event)
    result: Arrays | None = None
    error: BaseException | None = None

    @property
    def merge_key(self) -> tuple:
        return (self.output_filter,
                tuple((alias, array.dtype.str, array.shape[1:]) for alias, array in sorted(self.inputs.items())))


def batch_rows(inputs: Mapping[str, np.ndarray]) -> int | None:
    """The shared first dimension of all inputs, or None when the request cannot be merged with others."""
    sizes = {array.shape[0] if array.ndim else None for array in inputs.values()}
    if len(sizes) != 1:
        return None
    return sizes.pop()


class OpportunisticBatcher:
    IDLE_EXIT_SECONDS = 2.0  # an idle worker exits, so an unloaded version is not kept alive by its thread

    def __init__(self, run: Runner, name: str):
        self._run = run
        self._name = name
        self._queue: list[_Pending] = []
        self._wakeup = threading.Condition()
        self._worker_alive = False

    def run(self, inputs: Mapping[str, np.ndarray], output_filter: tuple[str, ...]) -> Arrays:
        rows = batch_rows(inputs)
        if not rows:
            return self._run(inputs, output_filter)
        pending = _Pending(inputs, output_filter, rows)
        with self._wakeup:
            self._queue.append(pending)
            if self._worker_alive:
                self._wakeup.notify()
            else:
                self._worker_alive = True
                threading.Thread(target=self._loop, name=f"batch-{self._name}", daemon=True).start()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def _loop(self) -> None:
        while True:
            with self._wakeup:
                if not self._queue:
                    self._wakeup.wait(self.IDLE_EXIT_SECONDS)
                if not self._queue:
                    self._worker_alive = False
                    return
                taken, self._queue = self._queue, []
            groups: dict[tuple, list[_Pending]] = defaultdict(list)
            for pending in taken:
                groups[pending.merge_key].append(pending)
            for group in groups.values():
                self._run_group(group)

    def _run_group(self, group: list[_Pending]) -> None:
        chunk: list[_Pending] = []
        rows = 0
        for pending in group:
            if chunk and rows + pending.rows > MAX_ROWS_PER_RUN:
                self._run_merged(chunk)
                chunk, rows = [], 0
            chunk.append(pending)
            rows += pending.rows
        if chunk:
            self._run_merged(chunk)

    def _run_merged(self, chunk: list[_Pending]) -> None:
        if len(chunk) > 1:
            total = sum(pending.rows for pending in chunk)
            merged = {alias: np.concatenate([pending.inputs[alias] for pending in chunk])
                      for alias in chunk[0].inputs}
            try:
                outputs = self._run(merged, chunk[0].output_filter)
            except BaseException:  # noqa: BLE001 - redo one by one so each request gets its own error
                outputs = None
            if outputs is not None and all(array.ndim and array.shape[0] == total for array in outputs.values()):
                offset = 0
                for pending in chunk:
                    pending.result = {alias: array[offset:offset + pending.rows] for alias, array in outputs.items()}
                    offset += pending.rows
                    pending.done.set()
                return
        for pending in chunk:
            try:
                pending.result = self._run(pending.inputs, pending.output_filter)
            except BaseException as error:  # noqa: BLE001 - handed to the waiting request thread
                pending.error = error
            pending.done.set()
