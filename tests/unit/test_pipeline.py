"""pipeline.up as a library call: a failed smoke test is an error there, not only in the task that prints it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tfship import pipeline
from tfship.artifacts import Artifacts, ImageArtifact
from tfship.config import Config
from tfship.smoke import Check, ReplicaResult


@pytest.fixture
def stages(monkeypatch, tmp_path):
    """Every stage replaced by a recorder (a unit test of the composition only); smoke results are settable."""
    calls: list[str] = []
    outcome = SimpleNamespace(results=[])
    pushed = Artifacts(images={"serving": ImageArtifact(role="serving", name="s", tag="t", image_id="sha256:1",
                                                        repository="127.0.0.1:5000/s", digest="sha256:abc")})

    def record(name, result=None):
        def stage(*args, **kwargs):
            calls.append(name)
            return result() if callable(result) else result
        return stage

    monkeypatch.setattr(pipeline.engine, "ensure_engine", record("engine"))
    monkeypatch.setattr(pipeline.models, "versions", lambda config, name: [1])
    monkeypatch.setattr(pipeline.images, "build", record("build"))
    monkeypatch.setattr(pipeline.registry, "up", record("registry"))
    monkeypatch.setattr(pipeline.push, "push", record("push", pushed))
    monkeypatch.setattr(pipeline.cluster, "up", record("cluster"))
    monkeypatch.setattr(pipeline.deploy, "deploy", record("deploy", SimpleNamespace(ready=3)))
    monkeypatch.setattr(pipeline.smoke, "smoke_test", record("smoke", lambda: outcome.results))
    outcome.calls = calls
    return outcome


def test_up_returns_the_summary_when_every_replica_passes(stages, tmp_path):
    stages.results = [ReplicaResult(pod=f"p{i}", checks=[Check("predict", True)]) for i in range(3)]
    summary = pipeline.up(Config(root=tmp_path))
    assert stages.calls == ["engine", "build", "registry", "push", "cluster", "deploy", "smoke"]
    assert [r.pod for r in summary.smoke] == ["p0", "p1", "p2"]


def test_up_raises_with_the_summary_when_a_replica_fails_the_smoke_test(stages, tmp_path):
    stages.results = [ReplicaResult(pod="good", checks=[Check("predict", True)]),
                      ReplicaResult(pod="bad", checks=[Check("predict", False, "wrong answer")])]
    with pytest.raises(pipeline.UpFailedSmokeTest, match="1 of 2 replicas failed the smoke test: bad") as failed:
        pipeline.up(Config(root=tmp_path))
    assert [r.pod for r in failed.value.summary.smoke] == ["good", "bad"]
    assert "FAILED" in str(failed.value.summary)
