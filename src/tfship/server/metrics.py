"""TF Serving's request metrics, exported in Prometheus text format as its PrometheusExporter writes them.

`/tensorflow/serving/request_count` {model_name, status} counts requests; `/tensorflow/serving/request_latency`
{model_name, API, entrypoint} is a histogram in microseconds with TF's buckets (ExponentialBuckets(10, 1.8, 33),
plus one up to DBL_MAX). Which requests land where is decided by the callers, as in TF Serving's
prediction_service_impl.cc (gRPC) and http_server.cc (REST).
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

REQUEST_COUNT = "/tensorflow/serving/request_count"
REQUEST_LATENCY = "/tensorflow/serving/request_latency"
_BUCKET_LIMITS_US = [10 * 1.8**index for index in range(33)]

Labels = tuple[tuple[str, str], ...]


def prometheus_name(metric: str) -> str:
    """GetPrometheusMetricName: every character outside [a-zA-Z0-9_] becomes ':'."""
    return "".join(c if c.isascii() and (c.isalnum() or c == "_") else ":" for c in metric)


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _labels(pairs: Labels) -> str:
    return ",".join(f'{key}="{_label_value(value)}"' for key, value in pairs)


def _number(value: float) -> str:
    """absl::StrCat of a double: printf's %g."""
    return "%g" % value


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[Labels, int] = defaultdict(int)
        self._latency_buckets: dict[Labels, list[int]] = {}
        self._latency_sums: dict[Labels, float] = defaultdict(float)

    def record_request(self, model_name: str, status: str) -> None:
        """RecordModelRequestCount: status is the canonical code's name (OK, INVALID_ARGUMENT, ...)."""
        with self._lock:
            self._counts[(("model_name", model_name), ("status", status))] += 1

    def record_latency(self, model_name: str, api: str, entrypoint: str, seconds: float) -> None:
        """RecordRequestLatency, in whole microseconds."""
        micros = int(seconds * 1e6)
        key = (("model_name", model_name), ("API", api), ("entrypoint", entrypoint))
        with self._lock:
            buckets = self._latency_buckets.setdefault(key, [0] * (len(_BUCKET_LIMITS_US) + 1))
            buckets[bisect.bisect_right(_BUCKET_LIMITS_US, micros)] += 1  # a bucket holds values below its limit
            self._latency_sums[key] += micros

    def first_value(self, metric: str) -> int:
        """The int64 value of a counter's first point (0 when it has none), as ReloadConfigRequest's
        metric_names read it."""
        if metric != REQUEST_COUNT:
            return 0
        with self._lock:
            return self._counts[min(self._counts)] if self._counts else 0

    def exposition(self) -> str:
        with self._lock:
            counts = dict(self._counts)
            buckets = {key: list(value) for key, value in self._latency_buckets.items()}
            sums = dict(self._latency_sums)
        count_name, latency_name = prometheus_name(REQUEST_COUNT), prometheus_name(REQUEST_LATENCY)
        lines = [f"# TYPE {count_name} counter"]
        for key, count in sorted(counts.items()):
            lines.append(f"{count_name}{{{_labels(key)}}} {count}")
        lines.append(f"# TYPE {latency_name} histogram")
        for key, per_bucket in sorted(buckets.items()):
            cumulative = 0
            limits = [*map(_number, _BUCKET_LIMITS_US), "+Inf"]
            for limit, hits in zip(limits, per_bucket):
                cumulative += hits
                lines.append(f'{latency_name}_bucket{{{_labels(key)},le="{limit}"}} {cumulative}')
            lines.append(f"{latency_name}_sum{{{_labels(key)}}} {_number(sums[key])}")
            lines.append(f"{latency_name}_count{{{_labels(key)}}} {cumulative}")
        return "\n".join(lines) + "\n"
