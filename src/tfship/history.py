"""Release history, kept in the cluster so every machine that deploys sees the same one.

One ConfigMap per app, `<app>-releases`, one key per release (`<UTC time>-<short digest>`, so keys sort by time),
each value a JSON record: when, by whom, the image and its digest, the models and versions, the gate's numbers,
the outcome (promoted, rejected, failed, rolled back) and, for promoted releases, the serving image record that
`invoke rollback --to` deploys again. Records are added with a JSON merge patch of one key, so two machines
releasing at once cannot overwrite each other's records; beyond release.history_limit the oldest are dropped.
"""

from __future__ import annotations

import datetime
import json
import socket
from dataclasses import asdict, dataclass, field
from typing import Any

from tfship import render
from tfship.artifacts import Artifacts, ImageArtifact, ServingRecord
from tfship.config import Config
from tfship.errors import KubernetesError
from tfship.kubectl import REQUEST_TIMEOUT, Reads

PROMOTED = "promoted"
REJECTED = "rejected"
FAILED = "failed"  # the gate passed but rolling the serving Deployment out failed (and was rolled back)
ROLLED_BACK = "rollback"  # `invoke rollback --to`: an earlier promoted release serves again
SERVING_OUTCOMES = (PROMOTED, ROLLED_BACK)  # outcomes after which the record's image served all replicas


@dataclass
class Record:
    id: str
    time: str  # ISO 8601, UTC
    outcome: str
    digest: str
    image: str
    models: dict[str, list[int]]
    reason: str = ""  # one line: why rejected or failed, or what was rolled back to
    previous: str = ""  # digest serving before this release
    by: str = ""  # host that ran it
    gate: dict[str, Any] = field(default_factory=dict)
    # What deploy needs to serve this release again (promoted releases only): the serving image, the models baked
    # in, how it serves them (the serving contract record) and the registry.
    artifacts: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Record":
        data = json.loads(text)
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        return cls(**known)

    def release_artifacts(self) -> Artifacts:
        """The artifacts record deploy renders from to serve this release again."""
        if not self.artifacts:
            raise KubernetesError(f"release {self.id} was {self.outcome}, not promoted: there is nothing to go back to",
                                  "pick a promoted release from: invoke history")
        image = ImageArtifact(**self.artifacts["image"])
        serving = self.artifacts.get("serving")
        return Artifacts(images={"serving": image}, models={k: list(v) for k, v in self.artifacts["models"].items()},
                         serving=ServingRecord.from_dict(dict(serving)) if serving else None,
                         registry=self.artifacts.get("registry", ""),
                         registry_auth=bool(self.artifacts.get("registry_auth", False)))

    def gate_line(self) -> str:
        """The gate's numbers in one line: error rate and p99 per model, canary vs serving."""
        parts = []
        for model, sides in (self.gate.get("models") or {}).items():
            canary, serving = sides.get("canary") or {}, sides.get("serving") or {}
            if not canary:
                continue
            if serving:
                parts.append(f"{model}: error {canary['error_rate']:.2f} vs {serving['error_rate']:.2f}, "
                             f"p99 {canary['p99_ms']:.0f} vs {serving['p99_ms']:.0f} ms")
            else:
                parts.append(f"{model}: error {canary['error_rate']:.2f}, p99 {canary['p99_ms']:.0f} ms")
        return "; ".join(parts) or "-"


def new_record(outcome: str, artifacts: Artifacts, *, reason: str = "", previous: str = "",
               gate: dict[str, Any] | None = None, now: datetime.datetime | None = None) -> Record:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    image = artifacts.image("serving")
    record = Record(
        id=f"{now:%Y%m%dT%H%M%SZ}-{image.digest.rpartition(':')[2][:12]}",
        time=now.isoformat(timespec="seconds"),
        outcome=outcome,
        digest=image.digest,
        image=image.pinned_ref,
        models={name: list(versions) for name, versions in artifacts.models.items()},
        reason=reason,
        previous=previous,
        by=socket.gethostname(),
        gate=gate or {},
    )
    if outcome in SERVING_OUTCOMES:
        record.artifacts = {"image": asdict(image), "models": record.models,
                            "serving": asdict(artifacts.serving) if artifacts.serving else None,
                            "registry": artifacts.registry, "registry_auth": artifacts.registry_auth}
    return record


def config_map_name(config: Config) -> str:
    return f"{config.kubernetes.app}-releases"


def append(config: Config, kube: Reads, record: Record) -> None:
    """Add `record` to the cluster's history (creating the ConfigMap on first use), then drop the oldest records
    beyond release.history_limit."""
    namespace = config.kubernetes.namespace
    name = config_map_name(config)
    manifest = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {**render.common_labels(config, version=None),
                                "app.kubernetes.io/component": "release-history"}},
    }
    created = kube.run("create", "-f", "-", input=json.dumps(manifest), check=False)
    if created.returncode != 0 and "AlreadyExists" not in (created.stderr or "") + (created.stdout or ""):
        raise KubernetesError(f"cannot create the release history configmap/{name} in {namespace}: "
                              f"{(created.stderr or created.stdout or '').strip()[-300:]}",
                              "check the cluster with: invoke cluster.status")
    kube.run("patch", "configmap", name, "-n", namespace, "--type", "merge",
             "-p", json.dumps({"data": {record.id: record.to_json()}}))
    stale = sorted(_data(config, kube))[:-config.release.history_limit]
    if stale:
        kube.run("patch", "configmap", name, "-n", namespace, "--type", "merge",
                 "-p", json.dumps({"data": {key: None for key in stale}}))


def load(config: Config, kube: Reads) -> list[Record]:
    """Every record, oldest first; none when nothing was released yet."""
    records = []
    for key, text in sorted(_data(config, kube).items()):
        try:
            records.append(Record.from_json(text))
        except (ValueError, TypeError) as error:
            raise KubernetesError(f"release record {key} in configmap/{config_map_name(config)} is not valid "
                                  f"({error})", f"remove it: kubectl edit configmap {config_map_name(config)} "
                                  f"-n {config.kubernetes.namespace}")
    return records


def find(records: list[Record], wanted: str) -> Record:
    """The record whose id is `wanted` or starts with it, or whose digest contains it."""
    matches = [r for r in records if r.id == wanted] or [
        r for r in records if r.id.startswith(wanted) or (len(wanted) >= 6 and wanted in r.digest)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise KubernetesError(f"no release {wanted!r} in the history", "see the ids with: invoke history")
    promoted = [r for r in matches if r.artifacts]
    if len({r.digest for r in promoted}) == 1 and promoted:
        return promoted[-1]  # the same image promoted more than once: any of them serves the same thing
    raise KubernetesError(f"{wanted!r} matches {len(matches)} releases ({', '.join(r.id for r in matches[:3])})",
                          "give the full id from: invoke history")


def format_table(records: list[Record]) -> str:
    if not records:
        return "no releases recorded yet (invoke release records them)"
    header = f"{'id':<29} {'time (UTC)':<20} {'outcome':<9} {'digest':<19} {'models':<16} gate"
    lines = [header, "-" * len(header)]
    for r in records:
        models = ",".join(f"{name}:{'+'.join(map(str, versions))}" for name, versions in r.models.items())
        when = r.time.replace("T", " ")[:19]
        lines.append(f"{r.id:<29} {when:<20} {r.outcome:<9} {r.digest[:19]:<19} {models:<16} {r.gate_line()}")
        if r.reason:
            lines.append(f"{'':<29} {r.reason}")
    return "\n".join(lines)


def _data(config: Config, kube: Reads) -> dict[str, str]:
    found = kube.json("get", "configmap", config_map_name(config), "-n", config.kubernetes.namespace,
                      "--ignore-not-found", REQUEST_TIMEOUT)
    return (found or {}).get("data") or {}
