"""Smoke-test logic that needs no cluster: scoring, samples, port-forward output parsing and clean-up, the table."""

import json
import sys
import textwrap

import pytest

from tfship import images, portforward, smoke
from tfship.artifacts import Artifacts
from tfship.config import Config, ModelSpec
from tfship.errors import SmokeTestError


def case(**kwargs):
    return smoke.SmokeCase(model="m", version=1, signatures=["serving_default"], **kwargs)


def test_exact_outputs_pass_within_tolerance_and_fail_outside():
    c = case(rows=[[1.0], [2.0]], expected_outputs=[2.5, 3.0])
    assert smoke.score(c, [[2.5], [3.00001]])[0]
    ok, rate, detail = smoke.score(c, [[2.5], [3.1]])
    assert not ok and rate == 0.5 and "differ" in detail


def test_exact_outputs_with_wrong_count_fail():
    ok, rate, _ = smoke.score(case(expected_outputs=[1.0, 2.0]), [[1.0]])
    assert not ok and rate == 1.0


def test_labels_error_rate_against_threshold():
    c = case(expected_labels=[0, 1, 2, 3], max_error_rate=0.25)
    one_wrong = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]]
    ok, rate, detail = smoke.score(c, one_wrong)
    assert ok and rate == 0.25 and "inference error rate 0.250" in detail
    two_wrong = [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]]
    assert not smoke.score(c, two_wrong)[0]


def test_sample_without_expectations_is_rejected():
    with pytest.raises(SmokeTestError, match="not a valid smoke sample"):
        smoke.apply_sample(case(), {"signature": "serving_default", "input_key": "x", "output_key": "y",
                                    "inputs": [[1.0]]}, "x.json")


def test_cases_read_the_sample_of_the_newest_baked_version(tmp_path):
    sample_dir = tmp_path / "models" / "m" / "7" / "assets.extra"
    sample_dir.mkdir(parents=True)
    (sample_dir / "smoke_sample.json").write_text(json.dumps(
        {"signature": "serving_default", "input_key": "pixels", "output_key": "probabilities",
         "inputs": [[1.0]], "expected_labels": ["3"]}))
    for version in ("3", "7"):
        (tmp_path / "models" / "m" / version).mkdir(parents=True, exist_ok=True)
        (tmp_path / "models" / "m" / version / "saved_model.pb").write_bytes(b"pb")
    config = Config(models=[ModelSpec(name="m")], root=tmp_path)
    served = {"m": [3, 7]}
    [c] = smoke.load_cases(config, Artifacts(models=served, serving=images.serving_record(config, served)))
    assert (c.version, c.expected_labels, c.rows, c.input_key) == (7, [3], [[1.0]], "pixels")


def test_rows_of_expected_outputs_are_flattened():
    c = case()
    smoke.apply_sample(c, {"signature": "s", "input_key": "x", "output_key": "y", "inputs": [[1.0], [2.0]],
                           "expected_outputs": [[2.5], [3.0]]}, "x.json")
    assert c.expected_outputs == [2.5, 3.0]


def test_configured_model_missing_from_image_is_an_error(tmp_path):
    config = Config(models=[ModelSpec(name="m"), ModelSpec(name="other")], root=tmp_path)
    with pytest.raises(SmokeTestError, match="other is configured but not in the serving image"):
        smoke.load_cases(config, Artifacts(models={"m": [1]}))


FAKE_KUBECTL = textwrap.dedent("""
    import sys, time
    if "{mode}" == "ok":
        print("Forwarding from 127.0.0.1:41001 -> 8500", flush=True)
        print("Forwarding from [::1]:41001 -> 8500", flush=True)
        print("Forwarding from 127.0.0.1:41002 -> 8501", flush=True)
        time.sleep(60)
    else:
        print('error: unable to forward port because pod is not running. Current status=Pending', flush=True)
        sys.exit(1)
""")


def fake_kubectl(tmp_path, mode):
    script = tmp_path / "kubectl.py"
    script.write_text(FAKE_KUBECTL.replace("{mode}", mode))
    return [sys.executable, str(script)]


def test_port_forward_reads_ports_from_kubectl_output_and_always_stops(tmp_path):
    forward = portforward.PortForward(fake_kubectl(tmp_path, "ok"), "ns", "pod-a", [8500, 8501])
    forward.start()
    try:
        assert forward.ports == {8500: 41001, 8501: 41002}
        assert forward.alive()
        assert forward.command[-4:] == ["--address", "127.0.0.1", ":8500", ":8501"]
    finally:
        forward.stop()
    assert not forward.alive()


def test_port_forward_that_fails_says_why(tmp_path):
    forward = portforward.PortForward(fake_kubectl(tmp_path, "fail"), "ns", "pod-a", [8500, 8501])
    with pytest.raises(SmokeTestError, match="pod is not running"):
        forward.start()
    assert not forward.alive()


def test_table_and_json_summary_name_failures():
    good = smoke.ReplicaResult("pod-a", [smoke.Check("m status", True)], [1.0, 2.0, 3.0])
    bad = smoke.ReplicaResult("pod-b", [smoke.Check("m predict rest", False, "HTTP 500")], [5.0])
    table = smoke.format_table([good, bad])
    assert "pod-a" in table and "ok" in table
    assert "FAILED" in table and "failed m predict rest: HTTP 500" in table
    assert good.summary()["p50_ms"] == 2.0 and not bad.ok
    assert [r.pod for r in smoke.failed([good, bad])] == ["pod-b"]
    assert not smoke.ReplicaResult("pod-c").ok  # no checks ran: not a pass


def test_every_port_forward_is_stopped_when_interrupted(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM) in the middle of a replica's checks still stops its kubectl port-forward."""
    from tfship import kubectl

    class FakeTarget(kubectl.Reads):
        def argv(self, *args):
            return fake_kubectl(tmp_path, "ok") + list(args)

    started = []
    real_start = portforward.PortForward.start

    def start(self):
        started.append(self)
        return real_start(self)

    def interrupted(forward, *args, **kwargs):
        assert forward.alive()
        raise KeyboardInterrupt

    monkeypatch.setattr(portforward.PortForward, "start", start)
    monkeypatch.setattr(smoke, "load_cases", lambda config, recorded: [])
    monkeypatch.setattr(smoke, "ready_pods", lambda config, kube: ["pod-a", "pod-b"])
    monkeypatch.setattr(smoke, "check_replica", interrupted)

    with pytest.raises(KeyboardInterrupt):
        smoke.smoke_test(Config(root=tmp_path), target=FakeTarget())
    assert len(started) == 1 and not started[0].alive()


# ----------------------------------------------------------------------------------------------------------------
# Known answers come from what build recorded


SAMPLE = {"signature": "serving_default", "input_key": "x", "output_key": "y", "inputs": [[1.0], [2.0]],
          "expected_outputs": [[2.5], [3.0]]}


def exported_model(root, name: str, version: str, sample: dict | None) -> None:
    folder = root / "models" / name / version
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"pb")
    if sample is not None:
        (folder / "assets.extra").mkdir()
        (folder / "assets.extra" / "smoke_sample.json").write_text(json.dumps(sample))


def built_project(tmp_path, *specs: ModelSpec) -> tuple[Config, Artifacts]:
    """A config and what `invoke build` records for it (samples kept in build/smoke-samples/)."""
    config = Config(models=list(specs), root=tmp_path)
    served = {spec.name: [1] for spec in specs}
    return config, Artifacts(models=served, serving=images.serving_record(config, served))


def test_the_smoke_test_reads_what_was_recorded_not_models_or_tfship_yaml(tmp_path):
    exported_model(tmp_path, "m", "1", SAMPLE)
    config, recorded = built_project(tmp_path, ModelSpec(name="m", signatures=["serving_default", "regress"]))
    kept = list((config.build_path / "smoke-samples").iterdir())
    assert [p.name for p in kept] == [recorded.serving.smoke["m"].sample.removeprefix("sha256:") + ".json"]
    # After the build: a new sample in models/ and other signatures in tfship.yaml.
    (tmp_path / "models" / "m" / "1" / "assets.extra" / "smoke_sample.json").write_text(
        json.dumps({**SAMPLE, "expected_outputs": [[9.0], [9.0]]}))
    config.models[0].signatures = ["serving_default"]
    [c] = smoke.load_cases(config, recorded)
    assert c.expected_outputs == [2.5, 3.0] and c.signatures == ["serving_default", "regress"]


def test_a_recorded_sample_that_changed_or_went_is_an_error(tmp_path):
    exported_model(tmp_path, "m", "1", SAMPLE)
    config, recorded = built_project(tmp_path, ModelSpec(name="m"))
    [kept] = (config.build_path / "smoke-samples").iterdir()
    kept.write_text(json.dumps({**SAMPLE, "expected_outputs": [[0.0], [0.0]]}))
    with pytest.raises(SmokeTestError, match="does not match its recorded digest"):
        smoke.load_cases(config, recorded)
    kept.unlink()
    with pytest.raises(SmokeTestError, match="is missing") as missing:
        smoke.load_cases(config, recorded)
    assert "invoke build" in missing.value.hint


class AnsweringClient:
    """Stands in for the gRPC and REST clients: the model is AVAILABLE with its signatures, y = 0.5x + 2."""

    def __init__(self, port, timeout):
        pass

    def version_state(self, model, version):
        return "AVAILABLE"

    def signatures(self, model):
        return ["serving_default"]

    def predict(self, case):
        return [[0.5 * row[0] + 2] for row in case.rows]

    def close(self):
        pass


class OpenForward:
    pod, ports, restarts = "pod-a", {8500: 1, 8501: 2}, 0

    def alive(self):
        return True


def test_a_model_without_known_answers_fails_unless_it_is_status_only(tmp_path, monkeypatch):
    monkeypatch.setattr(smoke, "GrpcClient", AnsweringClient)
    monkeypatch.setattr(smoke, "RestClient", AnsweringClient)
    exported_model(tmp_path, "answers", "1", SAMPLE)
    exported_model(tmp_path, "imported", "1", None)
    config, recorded = built_project(tmp_path, ModelSpec(name="answers"), ModelSpec(name="imported"))
    result = smoke.check_replica(OpenForward(), smoke.load_cases(config, recorded), 8500, 8501, timeout=1, retries=1)
    assert not result.ok
    assert [c.name for c in result.checks if not c.ok] == ["imported known answers"]
    assert "failed imported known answers: no known answers" in smoke.format_table([result])

    config, recorded = built_project(tmp_path, ModelSpec(name="answers"), ModelSpec(name="imported",
                                                                                   smoke="status-only"))
    assert recorded.serving.smoke["imported"].status_only and not recorded.serving.smoke["imported"].sample
    result = smoke.check_replica(OpenForward(), smoke.load_cases(config, recorded), 8500, 8501, timeout=1, retries=1)
    assert result.ok, smoke.format_table([result])
    assert [c.name for c in result.checks] == ["answers status", "answers metadata", "answers predict grpc",
                                               "answers predict rest", "imported status", "imported metadata"]


def test_status_only_is_a_model_setting(tmp_path):
    from tfship import config as tfconfig
    from tfship.errors import ConfigError

    (tmp_path / "tfship.yaml").write_text("models:\n  - name: m\n    smoke: status-only\n")
    assert tfconfig.load(tmp_path / "tfship.yaml", environ={}).model("m").smoke == "status-only"
    (tmp_path / "tfship.yaml").write_text("models:\n  - name: m\n    smoke: skip\n")
    with pytest.raises(ConfigError, match="smoke"):
        tfconfig.load(tmp_path / "tfship.yaml", environ={})
