"""The release quality gate: the same held-out sample sent to the canary and to one serving replica, one example
per request, compared on error rate, per-class accuracy and p99 latency against the `release.*` limits.

Measuring (`measure`) talks to two Predict clients (smoke.GrpcClient through each pod's port-forward); judging
(`compare`) is pure, so the limits are tested without a cluster. Requests alternate between the two sides, so a
busy moment of the node slows both alike; a failed request counts as a wrong answer.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from tfship import smoke
from tfship.config import Config

WARMUP_REQUESTS = 3  # per side and model, not measured: the first calls trace functions and open connections


class PredictClient(Protocol):
    def predict(self, case: smoke.SmokeCase) -> list: ...


@dataclass
class Side:
    """What one replica answered for one model's held-out sample."""

    pod: str
    requests: int = 0
    wrong: int = 0  # wrong answers and failed requests
    failed: int = 0  # failed requests only
    per_class: dict[str, list[int]] = field(default_factory=dict)  # label -> [correct, total]
    latencies_ms: list[float] = field(default_factory=list)
    first_failure: str = ""

    @property
    def error_rate(self) -> float:
        return self.wrong / self.requests if self.requests else 0.0

    @property
    def p99_ms(self) -> float:
        return smoke.percentile(self.latencies_ms, 99)

    def class_accuracy(self, label: str) -> float:
        correct, total = self.per_class.get(label, [0, 0])
        return correct / total if total else 0.0

    def summary(self) -> dict:
        return {"pod": self.pod, "requests": self.requests, "error_rate": round(self.error_rate, 4),
                "failed": self.failed, "p50_ms": round(smoke.percentile(self.latencies_ms, 50), 2),
                "p99_ms": round(self.p99_ms, 2)}


@dataclass
class Check:
    """One gate decision; `line` is what a rejection says."""

    model: str
    name: str
    ok: bool
    line: str
    canary: float | None = None
    serving: float | None = None

    def summary(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class GateResult:
    checks: list[Check] = field(default_factory=list)
    # model -> {"canary": Side, "serving": Side or None}
    sides: dict[str, dict[str, Side | None]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failure(self) -> Check | None:
        return next((check for check in self.checks if not check.ok), None)

    def summary(self) -> dict:
        """The numbers a release record keeps."""
        return {
            "ok": self.ok,
            "checks": [check.summary() for check in self.checks],
            "models": {model: {name: side.summary() if side else None for name, side in pair.items()}
                       for model, pair in self.sides.items()},
        }

    def table(self) -> str:
        lines = [f"{'model':<16} {'check':<22} {'result':<7} detail"]
        lines += [f"{c.model:<16} {c.name:<22} {'ok' if c.ok else 'FAILED':<7} {c.line}" for c in self.checks]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# Measuring


def row_cases(case: smoke.SmokeCase) -> list[tuple[str, smoke.SmokeCase]]:
    """(class label or "", one-example case) per row of the sample, each with its own known answer."""
    rows = list(case.rows)
    single = []
    if case.expected_labels is not None:
        for row, label in zip(rows, case.expected_labels):
            single.append((str(label), dataclasses.replace(case, rows=[row], expected_labels=[label],
                                                           expected_outputs=None, max_error_rate=0.0)))
    elif case.expected_outputs is not None and rows:
        width = len(case.expected_outputs) // len(rows)
        for index, row in enumerate(rows):
            expected = case.expected_outputs[index * width:(index + 1) * width]
            single.append(("", dataclasses.replace(case, rows=[row], expected_outputs=expected)))
    return single


def measure(
    case: smoke.SmokeCase,
    canary: PredictClient,
    serving: PredictClient | None,
    *,
    canary_pod: str,
    serving_pod: str = "",
    rounds: int,
    timer: Callable[[], float] = time.perf_counter,
) -> tuple[Side, Side | None]:
    """Send every example of the sample `rounds` times to each side, alternating which side goes first."""
    examples = row_cases(case)
    sides = [(canary, Side(canary_pod))] + ([(serving, Side(serving_pod))] if serving is not None else [])
    for client, _ in sides:
        for _, example in examples[:WARMUP_REQUESTS]:
            try:
                client.predict(example)
            except Exception:  # noqa: BLE001 - warm-up only; measured requests report failures
                pass
    for round_index in range(rounds):
        for index, (label, example) in enumerate(examples):
            order = sides if (index + round_index) % 2 == 0 else list(reversed(sides))
            for client, side in order:
                _one_request(client, side, label, example, timer)
    return sides[0][1], (sides[1][1] if serving is not None else None)


def _one_request(client: PredictClient, side: Side, label: str, example: smoke.SmokeCase,
                 timer: Callable[[], float]) -> None:
    started = timer()
    try:
        outputs = client.predict(example)
        correct, _, detail = smoke.score(example, outputs)
    except Exception as exc:  # noqa: BLE001 - a failed request is a wrong answer, reported, never a crash
        correct, detail = False, smoke._describe(exc)
        side.failed += 1
    side.latencies_ms.append((timer() - started) * 1000)
    side.requests += 1
    if not correct:
        side.wrong += 1
        side.first_failure = side.first_failure or detail
    if label:
        counts = side.per_class.setdefault(label, [0, 0])
        counts[0] += int(correct)
        counts[1] += 1


# --------------------------------------------------------------------------------------------------------------
# Judging


def compare(config: Config, model: str, canary: Side, serving: Side | None) -> list[Check]:
    """The gate's checks for one model, in the order a rejection names them. Without a serving version (the first
    release) only the absolute limit applies."""
    release = config.release
    absolute = config.smoke.max_error_rate
    checks = []

    c_rate = canary.error_rate
    s_rate = serving.error_rate if serving else None
    if serving is None:
        ok = c_rate <= absolute
        line = f"error rate {c_rate:.2f} (nothing serving to compare), limit {absolute:.2f}"
    else:
        increase_ok = c_rate - s_rate <= release.max_error_rate_increase + 1e-9
        ok = increase_ok and c_rate <= absolute
        limit = (f"limit +{release.max_error_rate_increase:.2f}" if not increase_ok or ok
                 else f"limit {absolute:.2f} (smoke.max_error_rate)")
        line = f"error rate {c_rate:.2f} vs {s_rate:.2f} serving, {limit}"
    if canary.failed:
        line += f"; {canary.failed} of {canary.requests} requests failed: {canary.first_failure}"
    checks.append(Check(model, "error rate", ok, line, c_rate, s_rate))

    if serving is not None and canary.per_class:
        drops = sorted(((serving.class_accuracy(label) - canary.class_accuracy(label), label)
                        for label in canary.per_class), reverse=True)
        drop, label = drops[0]
        ok = drop <= release.max_class_accuracy_drop + 1e-9
        line = (f"class {label} accuracy {canary.class_accuracy(label):.2f} vs {serving.class_accuracy(label):.2f} "
                f"serving, limit -{release.max_class_accuracy_drop:.2f}")
        checks.append(Check(model, "per-class accuracy", ok, line, canary.class_accuracy(label),
                            serving.class_accuracy(label)))

    if serving is not None and canary.latencies_ms and serving.latencies_ms:
        c_p99, s_p99 = canary.p99_ms, serving.p99_ms
        slower = c_p99 > release.max_p99_ratio * s_p99 and c_p99 - s_p99 > release.p99_slack_ms
        line = (f"p99 latency {c_p99:.0f} ms vs {s_p99:.0f} ms serving, limit x{release.max_p99_ratio:g} "
                f"(+{release.p99_slack_ms:g} ms)")
        checks.append(Check(model, "p99 latency", not slower, line, c_p99, s_p99))
    return checks


def smoke_checks(result: smoke.ReplicaResult) -> list[Check]:
    """The canary's smoke test (status, metadata, Predict over gRPC and REST) as gate checks."""
    failures = [check for check in result.checks if not check.ok]
    if not failures:
        return [Check("all", "smoke test", True, f"{len(result.checks)} checks passed on {result.pod}")]
    return [Check(check.name.split(" ")[0], "smoke test", False, f"smoke test {check.name}: {check.detail}")
            for check in failures]


def judge(config: Config, smoke_result: smoke.ReplicaResult,
          measured: dict[str, tuple[Side, Side | None]]) -> GateResult:
    """Every check: the quality comparison per model first (its numbers say most), then the smoke test."""
    result = GateResult()
    for model, (canary, serving) in measured.items():
        result.sides[model] = {"canary": canary, "serving": serving}
        result.checks += compare(config, model, canary, serving)
    result.checks += smoke_checks(smoke_result)
    return result


def sample_cases(cases: Sequence[smoke.SmokeCase]) -> list[smoke.SmokeCase]:
    """The cases that carry known answers (imported models without a sample are checked by the smoke test only)."""
    return [case for case in cases if case.rows and (case.expected_labels is not None
                                                     or case.expected_outputs is not None)]
