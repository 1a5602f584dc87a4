"""The deployed Service seen from this machine: where a user can reach it (invoke status), and how many inference
requests each replica has answered (from each pod's Prometheus metrics, for evaluate and the load-spread checks)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from tfship.config import Config
from tfship.errors import KubernetesError, TfshipError

REQUEST_TIMEOUT = 10.0  # one metrics page


def service_env_prefix(app: str) -> str:
    """Kubernetes' name for a Service's variables: APP upper-cased, `-` as `_` (tfship-serving: TFSHIP_SERVING)."""
    return app.upper().replace("-", "_")


# --------------------------------------------------------------------------------------------------------------
# Per-replica request counts from each pod's Prometheus metrics


INFERENCE_APIS = frozenset({"predict", "classify", "regress", "multi_inference", "multiinference"})


def request_count(metrics_text: str, model: str) -> int:
    """Inference requests a server answered for `model`: the count of TF Serving's request_latency histogram for
    the inference APIs (status and metadata requests, such as readiness probes, left out); without that histogram,
    :tensorflow:serving:request_count, every API."""
    from prometheus_client.parser import text_string_to_metric_families

    inference = total = 0
    seen_latency = False
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.labels.get("model_name") != model:
                continue
            if sample.name == ":tensorflow:serving:request_latency_count":
                seen_latency = True
                if sample.labels.get("API", "").lower() in INFERENCE_APIS:
                    inference += int(sample.value)
            elif sample.name.startswith(":tensorflow:serving:request_count"):
                total += int(sample.value)
    return inference if seen_latency else total


def replica_counts(config: Config, model: str) -> dict[str, int | None]:
    """Ready pod -> requests answered for `model` so far (None: its metrics cannot be read)."""
    import requests

    from tfship import cluster, portforward, render, smoke

    target = cluster.target(config)
    counts: dict[str, int | None] = {}
    for pod in smoke.ready_pods(config, target):
        forward = portforward.PortForward(target.argv(), config.kubernetes.namespace, pod, [config.serving.rest_port])
        try:
            forward.start()
            answer = requests.get(f"http://127.0.0.1:{forward.ports[config.serving.rest_port]}"
                                  f"{render.PROMETHEUS_PATH}", timeout=REQUEST_TIMEOUT)
            counts[pod] = request_count(answer.text, model) if answer.status_code == 200 else None
        except (TfshipError, requests.RequestException):
            counts[pod] = None
        finally:
            forward.stop()
    return counts


def format_replica_counts(before: dict[str, int | None], after: dict[str, int | None]) -> str:
    if not after or any(after.get(pod) is None for pod in after):
        return ("Requests per replica: unavailable (the servers expose no Prometheus metrics; set "
                "serving.prometheus: true in tfship.yaml and deploy again)")
    counts = {pod: after[pod] - (before.get(pod) or 0) for pod in sorted(after)}
    spread = "fair" if fair_share(counts) else "uneven"
    return (f"Requests per replica: {', '.join(f'{pod} {count}' for pod, count in counts.items())} "
            f"({spread}: most/least {max(counts.values())}/{min(counts.values())})")


def fair_share(counts: dict[str, int], ratio: float = 2.0) -> bool:
    """Every replica answered, none more than `ratio` times another (long-lived gRPC channels can pin one pod)."""
    values = list(counts.values())
    return bool(values) and min(values) > 0 and max(values) <= ratio * min(values)


# --------------------------------------------------------------------------------------------------------------
# Where the Service can be reached (invoke status)


@dataclass
class ServiceAddress:
    type: str
    cluster_ip: str
    lines: list[str]
    grpc_outside: str = ""  # host:port reachable from this machine, if any

    def describe(self) -> str:
        return "\n".join(self.lines)


def service_address(config: Config) -> ServiceAddress:
    from tfship import cluster

    kube = config.kubernetes
    found = cluster.target(config).run("get", "service", "-n", kube.namespace, kube.app, "-o", "json", check=False)
    if found.returncode != 0:
        raise KubernetesError(f"service {kube.namespace}/{kube.app} does not exist", "run: invoke deploy")
    service = json.loads(found.stdout)
    spec = service.get("spec", {})
    kind, cluster_ip = spec.get("type", "ClusterIP"), spec.get("clusterIP", "")
    ports = {p.get("name"): p for p in spec.get("ports", [])}
    env = service_env_prefix(kube.app)
    lines = [f"service {kube.namespace}/{kube.app} ({kind}): in the cluster at {cluster_ip} "
             f"(gRPC {ports.get('grpc', {}).get('port')}, REST {ports.get('http', {}).get('port')}; pods read "
             f"${env}_SERVICE_HOST)"]
    outside = ""
    if kind in ("NodePort", "LoadBalancer"):
        hosts = _node_addresses(config)
        grpc_port, rest_port = ports.get("grpc", {}).get("nodePort"), ports.get("http", {}).get("nodePort")
        for host in hosts:
            lines.append(f"  from outside: gRPC {host}:{grpc_port}, REST http://{host}:{rest_port}/v1/models/...")
        if hosts:
            outside = f"{hosts[0]}:{grpc_port}"
    for ingress in service.get("status", {}).get("loadBalancer", {}).get("ingress", []) or []:
        host = ingress.get("ip") or ingress.get("hostname")
        lines.append(f"  load balancer: gRPC {host}:{ports.get('grpc', {}).get('port')}, "
                     f"REST http://{host}:{ports.get('http', {}).get('port')}")
    if kind == "ClusterIP":
        lines.append("  from this machine: invoke predict / evaluate (port-forward), or set kubernetes.service_type")
    return ServiceAddress(kind, cluster_ip, lines, outside)


def _node_addresses(config: Config) -> list[str]:
    """Where node ports answer. The local cluster is this machine, so 127.0.0.1; others: each node's address."""
    from tfship import cluster

    if cluster.provider_for(config).name == "local":
        return ["127.0.0.1"]
    nodes = json.loads(cluster.target(config).run("get", "nodes", "-o", "json").stdout)["items"]
    addresses = []
    for node in nodes:
        by_type = {a["type"]: a["address"] for a in node.get("status", {}).get("addresses", [])}
        address = by_type.get("ExternalIP") or by_type.get("InternalIP")
        if address:
            addresses.append(address)
    return addresses
