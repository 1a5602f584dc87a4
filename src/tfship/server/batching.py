"""Server-side batching (--enable_batching): concurrent requests to one signature run as one model call.

TF Serving's BatchingParameters drive it (--batching_parameters_file; see model_config.read_batching_parameters):
  max_batch_size        rows in one model run; a request with more rows is refused (INVALID_ARGUMENT), as there
  batch_timeout_micros  how long an open batch may wait for more requests before it runs (0: never waits)
  max_enqueued_batches  batches waiting for a thread; a request that needs one more is refused (UNAVAILABLE)
  num_batch_threads     batches of one signature running at the same time
  allowed_batch_sizes   a merged batch is padded (with copies of its first row) up to the next allowed size
Without a file the defaults give opportunistic batching: no request waits for a batch to fill, one thread per
signature takes whatever queued while the previous run went on. Requests merge only when their inputs agree on
dtype and on every dimension but the first; a merged run whose outputs do not split back by rows (a model that
is not batch-wise) is redone one request at a time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import grpc
import numpy as np

from tfship.server.status import ServingError, invalid_argument

Arrays = dict[str, np.ndarray]
Runner = Callable[[Mapping[str, np.ndarray], tuple[str, ...]], Arrays]


@dataclass(frozen=True)
class BatchingOptions:
    """TF Serving's BatchingParameters with the server's defaults (TF Serving's, but one batch thread per
    signature: on a few cores a second Python thread per signature costs more than it overlaps)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 1
    allowed_batch_sizes: tuple[int, ...] = ()

    def problems(self) -> list[str]:
        """What TF Serving's batching session would refuse in these values."""
        found = []
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                found.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            found.append(f"batch_timeout_micros must not be negative, got {self.batch_timeout_micros}")
        sizes = self.allowed_batch_sizes
        if sizes:
            if any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] < 1:
                found.append(f"allowed_batch_sizes entries must be positive and increasing, got {list(sizes)}")
            if sizes[-1] != self.max_batch_size:
                found.append(f"the final entry of allowed_batch_sizes ({sizes[-1]}) must equal max_batch_size "
                             f"({self.max_batch_size})")
        return found

    def padded_size(self, rows: int) -> int:
        return next((size for size in self.allowed_batch_sizes if size >= rows), rows)


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass
class _Task:
    inputs: Mapping[str, np.ndarray]
    output_filter: tuple[str, ...]
    rows: int
    # Released by the batch thread once result or error is set. A held lock, not an Event: an Event's set and wait
    # are Python code around a Condition, a lock's are one C call (a tenth of a small model's request; profiled).
    done: threading.Lock = field(default_factory=_held_lock)
    result: Arrays | None = None
    error: BaseException | None = None

    @property
    def merge_key(self) -> tuple:
        return (self.output_filter,
                tuple((alias, array.dtype.str, array.shape[1:]) for alias, array in sorted(self.inputs.items())))


@dataclass
class _Batch:
    key: tuple
    opened: float
    tasks: list[_Task] = field(default_factory=list)
    rows: int = 0
    closed: bool = False  # full, or a later request did not fit: runs without waiting for the timeout


def batch_rows(inputs: Mapping[str, np.ndarray]) -> int | None:
    """The shared first dimension of all inputs, or None when the request cannot be merged with others."""
    sizes = {array.shape[0] if array.ndim else None for array in inputs.values()}
    if len(sizes) != 1:
        return None
    return sizes.pop()


class BatchScheduler:
    """The queue of one signature: requests join open batches, batch threads run them."""

    IDLE_EXIT_SECONDS = 2.0  # an idle thread exits, so an unloaded version is not kept alive by its threads

    def __init__(self, run: Runner, name: str, options: BatchingOptions = BatchingOptions()):
        self._run = run
        self._name = name
        self._options = options
        self._timeout = options.batch_timeout_micros / 1e6
        self._batches: list[_Batch] = []  # enqueued, oldest first; taken batches leave the list
        self._wakeup = threading.Condition()
        self._threads = 0
        self._idle_threads = 0

    def queued_tasks(self) -> int:
        with self._wakeup:
            return sum(len(batch.tasks) for batch in self._batches)

    def run(self, inputs: Mapping[str, np.ndarray], output_filter: tuple[str, ...]) -> Arrays:
        rows = batch_rows(inputs)
        if not rows:
            return self._run(inputs, output_filter)
        if rows > self._options.max_batch_size:
            raise invalid_argument(f"Task size {rows} is larger than maximum input batch size "
                                   f"{self._options.max_batch_size}")
        task = _Task(inputs, output_filter, rows)
        with self._wakeup:
            self._enqueue(task)
            if self._idle_threads:
                self._wakeup.notify()
            elif self._threads < self._options.num_batch_threads:
                self._threads += 1
                threading.Thread(target=self._loop, name=f"batch-{self._name}", daemon=True).start()
        task.done.acquire()
        if task.error is not None:
            raise task.error
        assert task.result is not None
        return task.result

    def _enqueue(self, task: _Task) -> None:
        key = task.merge_key
        for batch in reversed(self._batches):
            if batch.key == key and not batch.closed:
                if batch.rows + task.rows <= self._options.max_batch_size:
                    self._add(batch, task)
                    return
                batch.closed = True
                break
        if len(self._batches) >= self._options.max_enqueued_batches:
            raise ServingError(grpc.StatusCode.UNAVAILABLE,
                               "The batch scheduling queue to which this task was submitted is full")
        batch = _Batch(key, time.monotonic())
        self._batches.append(batch)
        self._add(batch, task)

    def _add(self, batch: _Batch, task: _Task) -> None:
        batch.tasks.append(task)
        batch.rows += task.rows
        if batch.rows == self._options.max_batch_size:
            batch.closed = True

    def _take(self) -> _Batch | None:
        """The oldest batch that may run now, waiting for one; None after IDLE_EXIT_SECONDS with nothing queued."""
        with self._wakeup:
            idle_since = time.monotonic()
            while True:
                now = time.monotonic()
                for index, batch in enumerate(self._batches):
                    if batch.closed or now >= batch.opened + self._timeout:
                        return self._batches.pop(index)
                if self._batches:
                    wait = min(batch.opened for batch in self._batches) + self._timeout - now
                    idle_since = now
                else:
                    wait = idle_since + self.IDLE_EXIT_SECONDS - now
                    if wait <= 0:
                        self._threads -= 1
                        return None
                self._idle_threads += 1
                self._wakeup.wait(wait)
                self._idle_threads -= 1

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            self._run_batch(batch.tasks)

    def _run_batch(self, tasks: list[_Task]) -> None:
        total = sum(task.rows for task in tasks)
        size = self._options.padded_size(total)
        if len(tasks) > 1 or size > total:
            merged = {alias: np.concatenate([task.inputs[alias] for task in tasks]) for alias in tasks[0].inputs}
            if size > total:  # TF Serving pads with copies of the first row; their outputs are dropped
                merged = {alias: np.concatenate([array, np.repeat(array[:1], size - total, axis=0)])
                          for alias, array in merged.items()}
            try:
                outputs = self._run(merged, tasks[0].output_filter)
            except BaseException:  # noqa: BLE001 - redo one by one so each request gets its own error
                outputs = None
            if outputs is not None and all(array.ndim and array.shape[0] == size for array in outputs.values()):
                offset = 0
                for task in tasks:
                    task.result = {alias: array[offset:offset + task.rows] for alias, array in outputs.items()}
                    offset += task.rows
                    task.done.release()
                return
        for task in tasks:
            try:
                task.result = self._run(task.inputs, task.output_filter)
            except BaseException as error:  # noqa: BLE001 - handed to the waiting request thread
                task.error = error
            task.done.release()
