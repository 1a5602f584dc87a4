"""The web app's only way to the model server: TF Serving's gRPC API through the official stubs, every call bounded.

Which deployed models classify images is read from the server's own metadata (GetModelMetadata, signature_def):
  - a `tensorflow/serving/classify` signature whose Examples carry one float feature named like the input of the
    model's predict signature (the convention tfship's exporters follow, e.g. digits' `pixels`), or else
  - a predict signature with one float input shaped like an image ([-1, H*W], [-1, H, W] or [-1, H, W, 1|3]) and
    one float output of class scores [-1, N >= 2] (classes are then named by index).
TF Serving has no "list models" call, so the names to ask about are given (the model server's config).
"""

from __future__ import annotations

import array
import math
import socket
import time
from dataclasses import dataclass, field

import grpc
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfship.errors import TfshipError
from tfship.server.replica import REPLICA_METADATA_KEY  # the python runtime names the replica that answered

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"


class WebError(TfshipError):
    """A request the page cannot serve; `status` is the HTTP status the page answers with."""

    def __init__(self, message: str, hint: str | None = None, status: int = 400):
        super().__init__(message, hint)
        self.status = status


@dataclass(frozen=True)
class ImageInput:
    """What a model wants from an image: size, channels, how the tensor is laid out, and the pixel range."""

    height: int
    width: int
    channels: int  # 1 (grayscale) or 3 (RGB)
    shape: tuple[int, ...]  # the signature's input shape without the batch dimension
    pixel_max: float  # ink (or full brightness) maps to this value, background to 0


@dataclass(frozen=True)
class Classifier:
    """A deployed model the page can send an image to."""

    name: str
    version: int
    image: ImageInput
    api: str  # "classify" or "predict"
    signature: str
    input_key: str  # predict input alias, also the Example feature name for classify
    output_key: str = ""  # predict output alias of the class scores


@dataclass(frozen=True)
class Unusable:
    """A deployed model the page lists but cannot classify an image with, and why."""

    name: str
    reason: str


@dataclass
class Catalog:
    classifiers: dict[str, Classifier] = field(default_factory=dict)
    unusable: dict[str, Unusable] = field(default_factory=dict)
    unreachable: list[str] = field(default_factory=list)  # one line per model the server did not answer for

    @property
    def server_answered(self) -> bool:
        return bool(self.classifiers or self.unusable)


@dataclass(frozen=True)
class Answer:
    classes: list[tuple[str, float]]  # best first
    model: str
    version: int
    replica: str | None  # None: the model server did not say which replica it is
    latency_ms: float  # the gRPC round trip


def pixel_max_for(name: str, input_size: int, overrides: dict[str, float]) -> float:
    """The value full ink maps to: an explicit override, else 16 for 64 features (scikit-learn's 8x8 digits count
    the ink pixels of 4x4 blocks, 0..16), else 1.0 (the usual scaling of MNIST-like models)."""
    if name in overrides:
        return overrides[name]
    return 16.0 if input_size == 64 else 1.0


def image_input_from(shape: list[int], pixel_max: float) -> ImageInput | None:
    """An ImageInput for a signature input shape (batch first), or None when it does not look like an image."""
    if len(shape) < 2 or shape[0] not in (-1, 1) or any(size <= 0 for size in shape[1:]):
        return None
    dims = tuple(shape[1:])
    if len(dims) == 1:
        side = math.isqrt(dims[0])
        if side < 2 or side * side != dims[0]:
            return None
        return ImageInput(side, side, 1, dims, pixel_max)
    if len(dims) == 2 and min(dims) >= 2:
        return ImageInput(dims[0], dims[1], 1, dims, pixel_max)
    if len(dims) == 3 and min(dims[:2]) >= 2 and dims[2] in (1, 3):
        return ImageInput(dims[0], dims[1], dims[2], dims, pixel_max)
    return None


def _shape(tensor_info: meta_graph_pb2.TensorInfo) -> list[int] | None:
    if tensor_info.tensor_shape.unknown_rank:
        return None
    return [dim.size for dim in tensor_info.tensor_shape.dim]


def _is_class_scores(tensor_info: meta_graph_pb2.TensorInfo) -> bool:
    shape = _shape(tensor_info)
    return tensor_info.dtype == types_pb2.DT_FLOAT and shape is not None and len(shape) == 2 and shape[1] >= 2


def describe(name: str, version: int, signatures: meta_graph_pb2.SignatureDef | dict,
             pixel_max_overrides: dict[str, float]) -> Classifier | Unusable:
    """Decide from a model's signature_def map whether (and how) the page can classify images with it."""
    predict_input = None  # (signature name, alias, ImageInput, output alias or "")
    reasons = []
    for sig_name in sorted(signatures, key=lambda n: (n != "serving_default", n)):
        sig = signatures[sig_name]
        if sig.method_name != PREDICT_METHOD:
            continue
        if len(sig.inputs) != 1:
            reasons.append(f"predict signature '{sig_name}' takes {len(sig.inputs)} inputs, not one image")
            continue
        alias, info = next(iter(sig.inputs.items()))
        shape = _shape(info)
        if info.dtype != types_pb2.DT_FLOAT or shape is None:
            reasons.append(f"input '{alias}' of '{sig_name}' is not a float tensor of known shape")
            continue
        size = math.prod(s for s in shape[1:]) if len(shape) > 1 else 0
        image = image_input_from(shape, pixel_max_for(name, size, pixel_max_overrides))
        if image is None:
            reasons.append(f"input '{alias}' of '{sig_name}' has shape {shape}, which is not an image")
            continue
        scores = [out_alias for out_alias, out in sig.outputs.items() if _is_class_scores(out)]
        predict_input = (sig_name, alias, image, scores[0] if len(scores) == 1 else "")
        break
    if predict_input is None:
        return Unusable(name, "; ".join(reasons) or "it has no predict signature taking an image")
    sig_name, alias, image, output_alias = predict_input
    for classify_name in sorted(signatures, key=lambda n: (n != "classify", n)):
        sig = signatures[classify_name]
        if sig.method_name == CLASSIFY_METHOD and "classes" in sig.outputs and "scores" in sig.outputs:
            return Classifier(name, version, image, "classify", classify_name, alias)
    if output_alias:
        return Classifier(name, version, image, "predict", sig_name, alias, output_alias)
    return Unusable(name, f"its signature '{sig_name}' takes an image but gives no single [batch, classes] score output")


# gRPC backs off up to 120 s between reconnection attempts: a page started before the model server's pods would stay
# unready long after they serve. Retry at most every 5 s instead (the page's readiness follows the model server's).
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 1000), ("grpc.max_reconnect_backoff_ms", 5000)]


class ModelClient:
    """One gRPC channel to the model server (a Service address, or a replica's), every call with a deadline."""

    def __init__(self, target: str, timeout: float = 5.0, pixel_max_overrides: dict[str, float] | None = None):
        self.target = target
        self.timeout = timeout
        self.pixel_max_overrides = dict(pixel_max_overrides or {})
        self.channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def catalog(self, names: list[str]) -> Catalog:
        """Every named model, sorted into classifiers and the rest (a model the server does not serve included)."""
        catalog = Catalog()
        for name in names:
            try:
                model = self.describe(name)
            except WebError as error:
                if error.status >= 500:
                    catalog.unreachable.append(error.one_line())
                    continue
                model = Unusable(name, error.message)
            if isinstance(model, Classifier):
                catalog.classifiers[name] = model
            else:
                catalog.unusable[name] = model
        return catalog

    def describe(self, name: str) -> Classifier | Unusable:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = name
        response, _ = self._call(self.stub.GetModelMetadata, request, name)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return describe(name, response.model_spec.version.value, signature_map.signature_def,
                        self.pixel_max_overrides)

    def classify(self, model: Classifier, pixels: list[float], top: int = 10) -> Answer:
        """Send one image (already converted to the model's input, flattened) and return the best classes."""
        if model.api == "classify":
            request = classification_pb2.ClassificationRequest()
            request.model_spec.name = model.name
            request.model_spec.signature_name = model.signature
            example = example_pb2.Example()
            example.features.feature[model.input_key].CopyFrom(
                feature_pb2.Feature(float_list=feature_pb2.FloatList(value=pixels)))
            request.input.example_list.examples.append(example)
            started = time.perf_counter()
            response, call = self._call(self.stub.Classify, request, model.name)
            latency_ms = (time.perf_counter() - started) * 1000
            scored = [(c.label, c.score) for c in response.result.classifications[0].classes]
        else:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model.name
            request.model_spec.signature_name = model.signature
            tensor = request.inputs[model.input_key]
            tensor.dtype = types_pb2.DT_FLOAT
            for size in (1, *model.image.shape):
                tensor.tensor_shape.dim.add(size=size)
            tensor.float_val.extend(pixels)
            request.output_filter.append(model.output_key)
            started = time.perf_counter()
            response, call = self._call(self.stub.Predict, request, model.name)
            latency_ms = (time.perf_counter() - started) * 1000
            scores = _float_values(response.outputs[model.output_key])
            scored = [(str(index), score) for index, score in enumerate(scores)]
        scored.sort(key=lambda item: item[1], reverse=True)
        replica = dict(call.trailing_metadata() or ()).get(REPLICA_METADATA_KEY)
        return Answer(scored[:top], model.name, response.model_spec.version.value, replica, latency_ms)

    def _call(self, method, request, model_name: str):
        try:
            return method.with_call(request, timeout=self.timeout)
        except grpc.RpcError as error:
            code = error.code()
            if code == grpc.StatusCode.NOT_FOUND:
                raise WebError(f"the model server does not serve a model named '{model_name}'",
                               "pick one of the models listed on the page", status=404)
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise WebError(f"model '{model_name}' refused the input: {error.details()}",
                               "pick an image classification model", status=422)
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise WebError(f"the model server at {self.target} did not answer within {self.timeout:g}s",
                               "try again; if it persists check the model server's pods", status=504)
            raise WebError(f"the model server at {self.target} failed: {code.name} {error.details() or ''}".strip(),
                           "check the model server's pods (invoke status)", status=502)


def _float_values(tensor) -> list[float]:
    if tensor.float_val:
        return list(tensor.float_val)
    values = array.array("f", tensor.tensor_content)  # little-endian float32, as TensorFlow packs it on x86 and ARM
    return values.tolist()


def this_host() -> str:
    """The web app's own pod name (a pod's hostname is its name)."""
    return socket.gethostname()
