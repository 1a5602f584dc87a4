"""kubernetes.service_type / node ports and serving.prometheus in config and rendered manifests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_render import API_VERSIONS_1_20, documents, make_artifacts, make_config, validate  # noqa: E402

from tfship import render  # noqa: E402
from tfship.errors import ConfigError  # noqa: E402

ONE_MODEL = {"half_plus_two": [1]}


def rendered(config, models=ONE_MODEL) -> dict:
    return documents(render.render(config, make_artifacts(models), render.select_api_versions(API_VERSIONS_1_20)))


def test_cluster_ip_is_the_default_and_has_no_node_ports(tmp_path):
    service = rendered(make_config(tmp_path))["Service"]
    assert service["spec"]["type"] == "ClusterIP"
    assert all("nodePort" not in port for port in service["spec"]["ports"])


def test_node_port_with_fixed_ports(tmp_path):
    config = make_config(tmp_path, **{"kubernetes.service_type": "NodePort", "kubernetes.node_port": "30851",
                                      "kubernetes.grpc_node_port": "30850"})
    service = rendered(config)["Service"]
    validate(service)
    assert service["spec"]["type"] == "NodePort"
    assert {p["name"]: p.get("nodePort") for p in service["spec"]["ports"]} == {"grpc": 30850, "http": 30851}


def test_load_balancer_lets_kubernetes_pick_ports(tmp_path):
    service = rendered(make_config(tmp_path, **{"kubernetes.service_type": "LoadBalancer"}))["Service"]
    assert service["spec"]["type"] == "LoadBalancer"
    assert all("nodePort" not in port for port in service["spec"]["ports"])


@pytest.mark.parametrize("overrides, message", [
    ({"kubernetes.service_type": "NodePort", "kubernetes.node_port": "8501"}, "outside the node port range"),
    ({"kubernetes.node_port": "30851"}, "service_type is ClusterIP"),
    ({"kubernetes.service_type": "NodePort", "kubernetes.node_port": "30851", "kubernetes.grpc_node_port": "30851"},
     "are both 30851"),
    ({"kubernetes.service_type": "Ingress"}, "must be one of ClusterIP, NodePort, LoadBalancer"),
])
def test_bad_exposure_settings_name_the_key(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_config(tmp_path, **overrides)


def test_prometheus_adds_the_monitoring_config_for_one_model(tmp_path):
    docs = rendered(make_config(tmp_path, **{"serving.prometheus": "true"}))
    assert docs["ConfigMap"]["data"] == {"monitoring.config": render.PROMETHEUS_MONITORING_CONFIG}
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert "--monitoring_config_file=/etc/tfship/monitoring.config" in container["args"]
    assert {e["name"] for e in container["env"]} == {"MODEL_NAME", "MODEL_BASE_PATH"}  # one model: no config file
    volumes = docs["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "model-config", "configMap": {"name": docs["ConfigMap"]["metadata"]["name"]}} in volumes


def test_prometheus_beside_a_model_config(tmp_path):
    docs = rendered(make_config(tmp_path, **{"serving.prometheus": "true"}), {"half_plus_two": [1], "digits": [1]})
    assert sorted(docs["ConfigMap"]["data"]) == ["models.config", "monitoring.config"]
    off = rendered(make_config(tmp_path), {"half_plus_two": [1], "digits": [1]})
    assert sorted(off["ConfigMap"]["data"]) == ["models.config"]
    assert off["ConfigMap"]["metadata"]["name"] != docs["ConfigMap"]["metadata"]["name"]
