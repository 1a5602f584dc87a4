"""Request counts and latencies in Prometheus text format, named like TF Serving's own metrics."""

from __future__ import annotations

import threading
from collections import defaultdict

# Latency buckets in microseconds, as TF Serving reports request_latency.
_BUCKETS_US = [10, 50, 100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000]


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f'{key}="{value}"' for key, value in pairs)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self._latency_buckets: dict[tuple[tuple[str, str], ...], list[int]] = {}
        self._latency_sums: dict[tuple[tuple[str, str], ...], float] = defaultdict(float)

    def record(self, model_name: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        count_key = (("model_name", model_name), ("status", status))
        latency_key = (("model_name", model_name), ("API", api), ("entrypoint", entrypoint))
        micros = seconds * 1e6
        with self._lock:
            self._counts[count_key] += 1
            buckets = self._latency_buckets.setdefault(latency_key, [0] * (len(_BUCKETS_US) + 1))
            for index, bound in enumerate(_BUCKETS_US):
                if micros <= bound:
                    buckets[index] += 1
                    break
            else:
                buckets[-1] += 1
            self._latency_sums[latency_key] += micros

    def exposition(self) -> str:
        with self._lock:
            counts = dict(self._counts)
            buckets = {key: list(value) for key, value in self._latency_buckets.items()}
            sums = dict(self._latency_sums)
        lines = ["# TYPE :tensorflow:serving:request_count counter"]
        for key, count in sorted(counts.items()):
            lines.append(f":tensorflow:serving:request_count{{{_labels(key)}}} {count}")
        lines.append("# TYPE :tensorflow:serving:request_latency histogram")
        for key, per_bucket in sorted(buckets.items()):
            cumulative = 0
            for bound, hits in zip([*map(str, _BUCKETS_US), "+Inf"], per_bucket):
                cumulative += hits
                lines.append(f":tensorflow:serving:request_latency_bucket{{{_labels(key)},le=\"{bound}\"}} "
                             f"{cumulative}")
            lines.append(f":tensorflow:serving:request_latency_sum{{{_labels(key)}}} {sums[key]:.0f}")
            lines.append(f":tensorflow:serving:request_latency_count{{{_labels(key)}}} {cumulative}")
        return "\n".join(lines) + "\n"
