"""The smoke test: every Ready replica, through its own `kubectl port-forward`, over gRPC and REST.

For each model it checks GetModelStatus (the expected version AVAILABLE), GetModelMetadata (the signatures
recorded at build time), and Predict on the model's recorded smoke sample over gRPC and REST against known
answers: exact values for regression-like models, an error rate under a threshold for classifiers (as TF Serving's
mnist_client reports "Inference error rate"). What it checks comes from build/artifacts.json only; a model without
known answers fails unless it is configured `smoke: status-only`. A port-forward pins one pod, so each replica gets
its own; all are always stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from tfship import artifacts as artifacts_store
from tfship import portforward, runs
from tfship.config import Config
from tfship.errors import SmokeTestError, TfshipError
from tfship.kubectl import Reads

EXACT_TOLERANCE = 1e-4
NO_KNOWN_ANSWERS = ("no known answers: the build recorded no smoke sample for this model (export it with one, or "
                    "set `smoke: status-only` on the model and build again)")


# ----------------------------------------------------------------------------------------------------------------
# What to check


@dataclass
class SmokeCase:
    """Known answers for one model: rows to send and either exact outputs or expected class labels."""

    model: str
    version: int
    signatures: list[str]
    signature_name: str = "serving_default"
    input_key: str = ""
    output_key: str = ""
    rows: list = field(default_factory=list)
    expected_outputs: list[float] | None = None  # (flattened) outputs, within atol + rtol * |expected|
    expected_labels: list[int] | None = None  # argmax of the outputs must match, up to max_error_rate
    max_error_rate: float = 0.0
    status_only: bool = False  # configured `smoke: status-only`: no rows and no known answers expected
    atol: float = EXACT_TOLERANCE
    rtol: float = 0.0
    # Generated samples (tfship.importers): several named inputs instead of input_key/rows, and their dtypes.
    named_rows: dict[str, list] | None = None
    dtypes: dict[str, str] = field(default_factory=dict)

    def request_inputs(self) -> dict[str, tuple[list, str]]:
        """Input name -> (rows, dtype name) to send."""
        named = self.named_rows if self.named_rows is not None else {self.input_key: self.rows}
        return {key: (rows, self.dtypes.get(key, "float32")) for key, rows in named.items()}


def load_cases(config: Config, recorded: artifacts_store.Artifacts) -> list[SmokeCase]:
    """One case per configured model, at the newest version baked into the serving image, from what build
    recorded: the signatures and the smoke sample (read from build/smoke-samples/ by its recorded digest, so it is
    exactly what was recorded, whatever models/ or tfship.yaml hold now): the exporter's known answers, or the ones
    model.add generated from the model's signature (tfship.importers). A model recorded without a sample has no
    known answers and fails the smoke test, unless it was built with `smoke: status-only`.
    """
    if not recorded.models:
        raise SmokeTestError("build/artifacts.json records no models", "run: invoke build push deploy")
    missing = [spec.name for spec in config.models if not recorded.models.get(spec.name)]
    if missing:
        raise SmokeTestError(
            f"model {missing[0]} is configured but not in the serving image", "run: invoke build push deploy"
        )
    if recorded.serving is None:
        raise SmokeTestError("build/artifacts.json does not record the serving image's smoke samples "
                             "(an older tfship wrote it)", "run: invoke build push deploy")
    cases = []
    for spec in config.models:
        checks = recorded.serving.smoke.get(spec.name, artifacts_store.SmokeRecord())
        case = SmokeCase(model=spec.name, version=max(recorded.models[spec.name]), signatures=list(checks.signatures),
                         status_only=checks.status_only, max_error_rate=config.smoke.max_error_rate)
        if checks.sample:
            sample = artifacts_store.read_sample(config.build_path, checks.sample)
            try:
                parsed = json.loads(sample)
            except ValueError as exc:
                raise SmokeTestError(f"the smoke sample {checks.sample} of {spec.name} is not JSON ({exc})",
                                     "re-export the model, then: invoke build push deploy") from None
            apply_sample(case, parsed, f"the smoke sample {checks.sample} of {spec.name}")
        cases.append(case)
    return cases


def apply_sample(case: SmokeCase, sample: dict, where: Path | str) -> None:
    """Fill a case from an exporter's smoke sample (keys as tfship.models.load_smoke_sample documents)."""
    try:
        case.signature_name = sample["signature"]
        case.input_key = sample["input_key"]
        case.output_key = sample["output_key"]
        if isinstance(sample["inputs"], dict):
            case.named_rows = {str(key): list(rows) for key, rows in sample["inputs"].items()}
            case.rows = next(iter(case.named_rows.values()), [])
        else:
            case.rows = list(sample["inputs"])
        case.dtypes = {str(key): str(value) for key, value in sample.get("input_dtypes", {}).items()}
        if "tolerance" in sample:  # generated samples: "expected outputs within atol/rtol"
            case.atol = float(sample["tolerance"]["atol"])
            case.rtol = float(sample["tolerance"]["rtol"])
        if "expected_outputs" in sample:
            case.expected_outputs = _flat(sample["expected_outputs"])
        elif "expected_labels" in sample:
            case.expected_labels = [int(v) for v in sample["expected_labels"]]
        else:
            raise KeyError("expected_outputs or expected_labels")
    except (KeyError, TypeError, ValueError) as exc:
        raise SmokeTestError(f"{where} is not a valid smoke sample (missing or bad {exc})", "re-export the model")


def _flat(value) -> list[float]:
    """Nested rows (any rank) as one flat list of floats."""
    if isinstance(value, list):
        return [x for v in value for x in _flat(v)]
    return [float(value)]


def score(case: SmokeCase, outputs: Sequence) -> tuple[bool, float, str]:
    """(passed, error rate, detail) for the outputs a replica returned for case.rows."""
    import numpy as np

    values = np.asarray(outputs, dtype=float)
    if case.expected_outputs is not None:
        expected = np.asarray(case.expected_outputs, dtype=float)
        got = values.reshape(-1)
        if got.shape != expected.shape:
            return False, 1.0, f"expected {expected.size} values, got {got.size}"
        wrong = int(np.sum(~np.isclose(got, expected, atol=case.atol, rtol=case.rtol)))
        rate = wrong / max(expected.size, 1)
        within = "exact" if not case.rtol else f"within atol {case.atol:g}/rtol {case.rtol:g}"
        detail = within if not wrong else (f"{wrong} of {expected.size} values differ ({within} expected): "
                                           f"got {got[:4].tolist()}, expected {expected[:4].tolist()}")
        return wrong == 0, rate, detail
    if case.expected_labels is not None:
        if values.ndim != 2 or values.shape[0] != len(case.expected_labels):
            return False, 1.0, f"expected {len(case.expected_labels)} rows of scores, got shape {values.shape}"
        predicted = values.argmax(axis=1)
        rate = float(np.mean(predicted != np.asarray(case.expected_labels)))
        ok = rate <= case.max_error_rate
        return ok, rate, f"inference error rate {rate:.3f} (limit {case.max_error_rate:.3f})"
    return True, 0.0, "no known answers"


# ----------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""
    error_rate: float | None = None


@dataclass
class ReplicaResult:
    pod: str
    checks: list[Check] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def error_rate(self) -> float:
        rates = [c.error_rate for c in self.checks if c.error_rate is not None]
        return max(rates) if rates else 0.0

    def percentile(self, p: float) -> float:
        return percentile(self.latencies_ms, p)

    def summary(self) -> dict:
        return {
            "pod": self.pod,
            "ok": self.ok,
            "checks_passed": sum(c.ok for c in self.checks),
            "checks": len(self.checks),
            "p50_ms": round(self.percentile(50), 2),
            "p99_ms": round(self.percentile(99), 2),
            "error_rate": round(self.error_rate, 4),
            "failures": [asdict(c) for c in self.checks if not c.ok],
        }


def percentile(values: Sequence[float], p: float) -> float:
    import numpy as np

    return float(np.percentile(values, p)) if len(values) else 0.0


def format_table(results: Sequence[ReplicaResult]) -> str:
    header = f"{'replica':<44} {'result':<7} {'checks':>7} {'p50 ms':>8} {'p99 ms':>8} {'error rate':>10}"
    lines = [header, "-" * len(header)]
    for r in results:
        s = r.summary()
        lines.append(
            f"{r.pod:<44} {'ok' if r.ok else 'FAILED':<7} {s['checks_passed']:>3}/{s['checks']:<3} "
            f"{s['p50_ms']:>8.1f} {s['p99_ms']:>8.1f} {s['error_rate']:>10.3f}"
        )
        for failure in s["failures"]:
            lines.append(f"    failed {failure['name']}: {failure['detail']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Clients: the official tensorflow-serving-api stubs over gRPC, requests over REST


class GrpcClient:
    def __init__(self, port: int, timeout: float):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def version_state(self, model: str, version: int) -> str:
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        request.model_spec.version.value = version
        response = self.models.GetModelStatus(request, timeout=self.timeout)
        states = {s.version: get_model_status_pb2.ModelVersionStatus.State.Name(s.state)
                  for s in response.model_version_status}
        return states.get(version, "MISSING")

    def signatures(self, model: str) -> list[str]:
        """The signature names GetModelMetadata reports."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = model
        response = self.prediction.GetModelMetadata(request, timeout=self.timeout)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return sorted(signature_map.signature_def)

    def predict(self, case: SmokeCase) -> list:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = case.model
        request.model_spec.signature_name = case.signature_name
        for key, (rows, dtype) in case.request_inputs().items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(rows, dtype=tf.as_dtype(dtype)))
        response = self.prediction.Predict(request, timeout=self.timeout)
        if case.output_key not in response.outputs:
            raise SmokeTestError(f"gRPC Predict returned outputs {sorted(response.outputs)}, not {case.output_key}")
        return tf.make_ndarray(response.outputs[case.output_key]).tolist()


class RestClient:
    def __init__(self, port: int, timeout: float):
        import requests

        self.session = requests.Session()
        self.base = f"http://127.0.0.1:{port}/v1/models"
        self.timeout = timeout

    def close(self) -> None:
        self.session.close()

    def predict(self, case: SmokeCase) -> list:
        # Columnar format with the input named: exact whatever the signature's other outputs are.
        body = {"signature_name": case.signature_name,
                "inputs": {key: rows for key, (rows, _) in case.request_inputs().items()}}
        response = self.session.post(f"{self.base}/{case.model}:predict", json=body, timeout=self.timeout)
        if response.status_code != 200:
            raise SmokeTestError(f"REST predict answered HTTP {response.status_code}: {response.text[:200]}")
        outputs = response.json()["outputs"]
        if isinstance(outputs, dict):  # several outputs come back by name; one comes back bare
            if case.output_key not in outputs:
                raise SmokeTestError(f"REST predict returned outputs {sorted(outputs)}, not {case.output_key}")
            outputs = outputs[case.output_key]
        return outputs


# ----------------------------------------------------------------------------------------------------------------
# Running it


def check_replica(forward: portforward.PortForward, cases: Sequence[SmokeCase], grpc_port: int, rest_port: int,
                  *, timeout: float, retries: int) -> ReplicaResult:
    result = ReplicaResult(pod=forward.pod)
    grpc_client = GrpcClient(forward.ports[grpc_port], timeout)
    rest_client = RestClient(forward.ports[rest_port], timeout)

    def attempt(name: str, call: Callable, judge: Callable[[object], Check]) -> None:
        """Bounded retries; a dropped forward is restarted once (clients are re-pointed at the new ports)."""
        nonlocal grpc_client, rest_client
        last_error = ""
        for _ in range(max(retries, 1)):
            started = time.perf_counter()
            try:
                value = call()
            except Exception as exc:  # a failed call is a failed check, reported, never a crash
                last_error = _describe(exc)
                if not forward.alive() and forward.restarts == 0:
                    forward.restart()
                    grpc_client.close()
                    rest_client.close()
                    grpc_client = GrpcClient(forward.ports[grpc_port], timeout)
                    rest_client = RestClient(forward.ports[rest_port], timeout)
                time.sleep(0.5)
                continue
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            check = judge(value)
            check.name = name
            result.checks.append(check)
            return
        result.checks.append(Check(name, False, last_error))

    try:
        for case in cases:
            attempt(f"{case.model} status", lambda: grpc_client.version_state(case.model, case.version),
                    lambda state: Check("", state == "AVAILABLE", f"version {case.version} is {state}"))

            def signatures_present(found: list[str]) -> Check:
                missing = sorted(set(case.signatures) - set(found))
                return Check("", not missing, f"missing signatures {missing}" if missing else "signatures present")

            attempt(f"{case.model} metadata", lambda: grpc_client.signatures(case.model), signatures_present)
            if not case.rows:
                if not case.status_only:
                    result.checks.append(Check(f"{case.model} known answers", False, NO_KNOWN_ANSWERS))
                continue

            def judge(outputs) -> Check:
                ok, rate, detail = score(case, outputs)
                return Check("", ok, detail, rate)

            attempt(f"{case.model} predict grpc", lambda: grpc_client.predict(case), judge)
            attempt(f"{case.model} predict rest", lambda: rest_client.predict(case), judge)
    finally:
        grpc_client.close()
        rest_client.close()
    return result


def _describe(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    if callable(code):  # grpc.RpcError
        try:
            return f"gRPC {exc.code().name}: {exc.details()}"
        except Exception:
            pass
    return f"{type(exc).__name__}: {exc}"[:300]


def ready_pods(config: Config, kube: Reads) -> list[str]:
    from tfship import render

    pods = kube.items("get", "pods", "-n", config.kubernetes.namespace, "-l", render.selector(config))
    ready = []
    for pod in pods:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
        if conditions.get("Ready") == "True":
            ready.append(pod["metadata"]["name"])
    return sorted(ready)


def smoke_test(config: Config, *, target: Reads | None = None) -> list[ReplicaResult]:
    """Check every Ready replica, each through its own port-forward; a replica that fails is reported in its
    result, not raised (see require_all_ok), so one bad pod never hides the others."""
    from tfship import cluster

    recorded = artifacts_store.load(config.artifacts_path)
    cases = load_cases(config, recorded)
    kube = target or cluster.target(config)
    pods = ready_pods(config, kube)
    if not pods:
        raise SmokeTestError(f"no Ready pod of {config.kubernetes.app} in namespace {config.kubernetes.namespace}",
                             "run: invoke deploy, then invoke status")
    # The ports the serving image listens on, as recorded (load_cases refused a record without them).
    serving = recorded.serving or artifacts_store.ServingRecord(model_name="")
    ports = (serving.grpc_port, serving.rest_port)
    results = []
    with runs.sigterm_unwinds():  # the finally that stops each port-forward runs on SIGTERM too
        for pod in pods:
            forward = portforward.PortForward(kube.argv(), config.kubernetes.namespace, pod, ports)
            try:
                forward.start()
                results.append(check_replica(forward, cases, *ports, timeout=config.smoke.timeout,
                                             retries=config.smoke.retries))
            except TfshipError as error:
                results.append(ReplicaResult(pod=pod, checks=[Check("port-forward", False, error.message)]))
            finally:
                forward.stop()
        from tfship.web import stages as web_stages  # here: tfship.web.stages imports tfship.render

        web = web_stages.smoke_result(config, recorded, kube)  # the page, when a web image was built
        if web is not None:
            results.append(web)
    return results


def failed(results: Sequence[ReplicaResult]) -> Iterator[ReplicaResult]:
    return (r for r in results if not r.ok)


def require_all_ok(results: Sequence[ReplicaResult]) -> None:
    bad = [r.pod for r in failed(results)]
    if bad:
        raise SmokeTestError(f"{len(bad)} of {len(results)} replicas failed the smoke test: {', '.join(bad)}",
                             "see the failed checks above; kubectl logs the pod, or invoke rollback")
