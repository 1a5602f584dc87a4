"""Acceptance of a new serving image: it runs on 127.0.0.1 with random ports, every served version must become
AVAILABLE and each model must answer one prediction built from its own metadata, before the image is given its real
tag (images.ensure_serving_image). Nothing here pushes or records anything."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Mapping

import requests

from tfship import contract, docker_client
from tfship.errors import DockerError
from tfship.progress import step

ACCEPT_TIMEOUT = 240.0  # seconds for every model to become AVAILABLE (the python runtime imports TensorFlow)
REQUEST_TIMEOUT = 30.0


def accept_serving_image(ref: str, served: Mapping[str, list[int]], grpc_port: int = contract.GRPC_PORT,
                         rest_port: int = contract.REST_PORT, timeout: float = ACCEPT_TIMEOUT) -> None:
    """Start `ref` with its gRPC and REST ports published on random 127.0.0.1 ports, wait (bounded) until every
    served version is AVAILABLE over REST, and send one prediction per model built from its metadata. Raises
    DockerError on any failure."""
    with step(f"Accepting {ref}: one live prediction per model") as progress:
        container = start_container(ref, grpc_port, rest_port)
        try:
            rest = f"http://127.0.0.1:{container.rest_port}"
            session = requests.Session()
            session.trust_env = False  # loopback only, never through a proxy
            for name, versions in served.items():
                wait_available(session, rest, name, versions, container, deadline=time.monotonic() + timeout)
                progress.update(f"{name} versions {versions} AVAILABLE")
                predict_once(session, rest, name)
                progress.update(f"{name}: prediction answered")
            progress.done("accepted")
        finally:
            container.remove()


@dataclass
class RunningContainer:
    id: str
    rest_port: int
    grpc_port: int

    def logs_tail(self, lines: int = 5) -> str:
        with docker_client.errors("reading container logs"):
            text = docker_client.api().logs(self.id, tail=lines).decode(errors="replace")
        return " | ".join(line.strip() for line in text.splitlines() if line.strip())

    def running(self) -> bool:
        with docker_client.errors("inspecting the acceptance container"):
            return bool(docker_client.api().inspect_container(self.id)["State"]["Running"])

    def remove(self) -> None:
        with docker_client.errors("removing the acceptance container"):
            docker_client.api().remove_container(self.id, force=True)


def start_container(ref: str, grpc_port: int = contract.GRPC_PORT, rest_port: int = contract.REST_PORT
                    ) -> RunningContainer:
    """Run `ref` detached with its gRPC and REST ports published on random 127.0.0.1 ports."""
    client = docker_client.api()
    name = f"tfship-accept-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    with docker_client.errors(f"starting {ref}"):
        host_config = client.create_host_config(port_bindings={grpc_port: ("127.0.0.1",), rest_port: ("127.0.0.1",)})
        created = client.create_container(ref, name=name, ports=[grpc_port, rest_port], host_config=host_config,
                                          labels={"io.tfship.role": "acceptance"})
        try:
            client.start(created["Id"])
            ports = client.inspect_container(created["Id"])["NetworkSettings"]["Ports"]
            return RunningContainer(created["Id"], int(ports[f"{rest_port}/tcp"][0]["HostPort"]),
                                    int(ports[f"{grpc_port}/tcp"][0]["HostPort"]))
        except BaseException:
            client.remove_container(created["Id"], force=True)
            raise


def wait_available(session: requests.Session, rest: str, name: str, versions: list[int],
                   container: RunningContainer, deadline: float) -> None:
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not container.running():
            raise DockerError(f"the serving container exited before model '{name}' was AVAILABLE: "
                              f"{container.logs_tail()}", "fix the image or the model; see the logs above")
        try:
            answer = session.get(f"{rest}/v1/models/{name}", timeout=5)
            if answer.status_code == 200:
                states = {int(s["version"]): s.get("state") for s in answer.json().get("model_version_status", [])}
                if all(states.get(v) == "AVAILABLE" for v in versions):
                    return
                last = f"states {states}"
            else:
                last = f"HTTP {answer.status_code}: {answer.text[:200]}"
        except (requests.RequestException, ValueError) as exc:
            last = type(exc).__name__
        time.sleep(1.0)
    raise DockerError(f"model '{name}' versions {versions} not AVAILABLE within the acceptance timeout ({last}): "
                      f"{container.logs_tail()}", "check the model loads: invoke model.validate")


def predict_once(session: requests.Session, rest: str, name: str) -> dict:
    """POST one request to :predict, shaped from the model's serving_default signature; returns the answer."""
    try:
        metadata = session.get(f"{rest}/v1/models/{name}/metadata", timeout=REQUEST_TIMEOUT)
        metadata.raise_for_status()
        request = example_request(metadata.json(), predict_signature(metadata.json()))
        answer = session.post(f"{rest}/v1/models/{name}:predict", json=request, timeout=REQUEST_TIMEOUT)
    except (requests.RequestException, ValueError) as exc:
        raise DockerError(f"model '{name}' did not answer a prediction: {exc}", "see the serving logs") from None
    if answer.status_code != 200:
        raise DockerError(f"model '{name}' refused a prediction: HTTP {answer.status_code} {answer.text[:200]}",
                          "check the model's serving_default signature")
    body = answer.json()
    if "predictions" not in body and "outputs" not in body:
        raise DockerError(f"model '{name}' answered a prediction without outputs: {answer.text[:200]}",
                          "check the server")
    return body


_ZERO_BY_DTYPE = {"DT_STRING": "", "DT_BOOL": False}
PREDICT_METHOD = "tensorflow/serving/predict"


def predict_signature(metadata: dict) -> str:
    """serving_default, unless it is a classify/regress signature (it parses tf.Examples, which zeros are not, as
    in TF Serving's MNIST model): then the first Predict signature, by name."""
    try:
        signatures = metadata["metadata"]["signature_def"]["signature_def"]
    except (KeyError, TypeError):
        return "serving_default"
    methods = {name: spec.get("method_name", PREDICT_METHOD) for name, spec in signatures.items()}
    if methods.get("serving_default", PREDICT_METHOD) == PREDICT_METHOD:
        return "serving_default"
    return next((name for name in sorted(methods) if methods[name] == PREDICT_METHOD), "serving_default")


def example_request(metadata: dict, signature: str = "serving_default") -> dict:
    """A batch-of-one :predict request of zeros matching `signature`'s inputs, from a GetModelMetadata answer."""
    try:
        signatures = metadata["metadata"]["signature_def"]["signature_def"]
        inputs = signatures[signature]["inputs"]
    except (KeyError, TypeError):
        raise DockerError(f"the model metadata has no '{signature}' signature", "export the model with one") from None
    request_inputs = {}
    for input_name, spec in inputs.items():
        dtype = spec.get("dtype", "DT_FLOAT")
        zero = _ZERO_BY_DTYPE.get(dtype, 0.0 if dtype in ("DT_FLOAT", "DT_DOUBLE", "DT_HALF", "DT_BFLOAT16") else 0)
        shape = spec.get("tensor_shape", {})
        dims = [int(d.get("size", 1)) for d in shape.get("dim", [])] if not shape.get("unknown_rank") else [1]
        # a batch of one; other unknown sizes become 1
        request_inputs[input_name] = _filled([1] + [max(size, 1) for size in dims[1:]] if dims else [], zero)
    return {"signature_name": signature, "inputs": request_inputs}


def _filled(dims: list[int], value: object) -> object:
    return value if not dims else [_filled(dims[1:], value) for _ in range(dims[0])]
