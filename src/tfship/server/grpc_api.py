"""gRPC: tensorflow.serving PredictionService and ModelService (official stubs), plus grpc.health.v1."""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tfship.server import inference
from tfship.server.metrics import Metrics
from tfship.server.model_config import config_list_problem
from tfship.server.models import DEFAULT_SIGNATURE, ModelManager, ModelVersion
from tfship.server.grpc_front import GrpcioServer, NativeHealth, NativeServer, choose_front
from tfship.server.status import ServingError, invalid_argument
from tfship.server.tensors import ndarray_to_proto, proto_to_ndarray, serialized_examples_from_input

Response = TypeVar("Response")
log = logging.getLogger("tfship.server")

# Message size bounds unless --grpc_channel_arguments says otherwise: TF Serving's INT32_MAX for answers, and a
# stricter 64 MiB for requests (a request is decoded in full before any check; a bigger one can be raised
# with grpc.max_receive_message_length).
DEFAULT_MAX_RECEIVE_BYTES = 64 * 2**20
DEFAULT_MAX_SEND_BYTES = 2**31 - 1


def resolve_spec(manager: ModelManager, spec: model_pb2.ModelSpec) -> ModelVersion:
    """ServerCore::GetServableHandle: the version a ModelSpec names (latest, specific or by label)."""
    if not spec.name:
        raise invalid_argument("ModelSpec has no name specified.")
    choice = spec.WhichOneof("version_choice")
    version = spec.version.value if choice == "version" else None
    label = spec.version_label if choice == "version_label" else None
    return manager.resolve(spec.name, version, label)


def _fill_spec(target: model_pb2.ModelSpec, version: ModelVersion, signature_name: str | None) -> None:
    target.name = version.model_name
    target.version.value = version.version
    if signature_name is not None:
        target.signature_name = signature_name


class _Handler:
    def __init__(self, manager: ModelManager, metrics: Metrics):
        self.manager = manager
        self.metrics = metrics

    def _serve(self, context: grpc.ServicerContext, api: str | None, model_name: str,
               work: Callable[[], Response]) -> Response:
        """Runs work, answering a ServingError with its code. As prediction_service_impl.cc, only Predict,
        Classify and Regress (api given) are counted in request_count, and timed in request_latency when OK."""
        started = time.perf_counter()
        status = grpc.StatusCode.OK
        try:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:  # waited in the queue past its deadline: drop it
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded before the request ran")
            return work()
        except ServingError as error:
            status = error.code
            context.abort(error.code, error.message)
            raise  # unreachable: abort raises
        except Exception:  # noqa: BLE001 - a server bug: logged here, its text is not the client's business
            status = grpc.StatusCode.INTERNAL
            log.exception("gRPC %s for model %r failed", api or "call", model_name)
            context.abort(grpc.StatusCode.INTERNAL, "Internal error")
            raise  # unreachable: abort raises
        finally:
            if api is not None:
                self.metrics.record_request(model_name, status.name)
                if status == grpc.StatusCode.OK:
                    self.metrics.record_latency(model_name, api, "GRPC", time.perf_counter() - started)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer, _Handler):
    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext) -> predict_pb2.PredictResponse:
        def work() -> predict_pb2.PredictResponse:
            version = resolve_spec(self.manager, request.model_spec)
            signature = version.signature(request.model_spec.signature_name)  # FAILED_PRECONDITION, as RunPredict
            inputs = {alias: proto_to_ndarray(tensor, alias) for alias, tensor in request.inputs.items()}
            outputs = signature.run(inputs, list(request.output_filter))
            response = predict_pb2.PredictResponse()
            _fill_spec(response.model_spec, version, signature.name)
            for alias, array in outputs.items():
                response.outputs[alias].CopyFrom(ndarray_to_proto(array))
            return response

        return self._serve(context, "Predict", request.model_spec.name, work)

    def Classify(self, request: classification_pb2.ClassificationRequest,
                 context: grpc.ServicerContext) -> classification_pb2.ClassificationResponse:
        def work() -> classification_pb2.ClassificationResponse:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            version = resolve_spec(self.manager, request.model_spec)
            serialized = serialized_examples_from_input(request.input)
            signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
            response = classification_pb2.ClassificationResponse()
            _fill_result_classify(response.result, inference.classify(version, signature_name, serialized))
            _fill_spec(response.model_spec, version, signature_name)
            return response

        return self._serve(context, "Classify", request.model_spec.name, work)

    def Regress(self, request: regression_pb2.RegressionRequest,
                context: grpc.ServicerContext) -> regression_pb2.RegressionResponse:
        def work() -> regression_pb2.RegressionResponse:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            version = resolve_spec(self.manager, request.model_spec)
            serialized = serialized_examples_from_input(request.input)
            signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
            response = regression_pb2.RegressionResponse()
            _fill_result_regress(response.result, inference.regress(version, signature_name, serialized))
            _fill_spec(response.model_spec, version, signature_name)
            return response

        return self._serve(context, "Regress", request.model_spec.name, work)

    def MultiInference(self, request: inference_pb2.MultiInferenceRequest,
                       context: grpc.ServicerContext) -> inference_pb2.MultiInferenceResponse:
        def work() -> inference_pb2.MultiInferenceResponse:
            if not request.tasks:
                raise invalid_argument("MultiInferenceRequest must contain at least one task")
            names = {task.model_spec.name for task in request.tasks}
            if len(names) != 1:
                raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
            serialized = serialized_examples_from_input(request.input)
            version = resolve_spec(self.manager, request.tasks[0].model_spec)
            response = inference_pb2.MultiInferenceResponse()
            seen_signatures: set[str] = set()
            for task in request.tasks:
                if resolve_spec(self.manager, task.model_spec) is not version:
                    raise invalid_argument("ModelSpecs in a MultiInferenceRequest must access the same version.")
                signature_name = task.model_spec.signature_name or DEFAULT_SIGNATURE
                if signature_name in seen_signatures:
                    raise invalid_argument("Duplicate evaluation of signature: " + signature_name)
                seen_signatures.add(signature_name)
                result = response.results.add()
                if task.method_name == inference.CLASSIFY_METHOD:
                    _fill_result_classify(result.classification_result,
                                          inference.classify(version, signature_name, serialized))
                elif task.method_name == inference.REGRESS_METHOD:
                    _fill_result_regress(result.regression_result,
                                         inference.regress(version, signature_name, serialized))
                else:
                    raise invalid_argument(f"Unsupported signature method_name: {task.method_name}")
                _fill_spec(result.model_spec, version, signature_name)
            return response

        name = request.tasks[0].model_spec.name if request.tasks else ""
        return self._serve(context, None, name, work)

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,
                         context: grpc.ServicerContext) -> get_model_metadata_pb2.GetModelMetadataResponse:
        def work() -> get_model_metadata_pb2.GetModelMetadataResponse:
            return model_metadata(self.manager, request)

        return self._serve(context, None, request.model_spec.name, work)


def model_metadata(manager: ModelManager,
                   request: get_model_metadata_pb2.GetModelMetadataRequest) -> get_model_metadata_pb2.GetModelMetadataResponse:
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    if not request.metadata_field:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for field_name in request.metadata_field:
        if field_name != "signature_def":
            raise invalid_argument(f"Metadata field {field_name} is not supported")
    version = resolve_spec(manager, request.model_spec)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    _fill_spec(response.model_spec, version, None)
    response.metadata["signature_def"].Pack(version.signature_def_map())
    return response


def model_status(manager: ModelManager,
                 request: get_model_status_pb2.GetModelStatusRequest) -> get_model_status_pb2.GetModelStatusResponse:
    """GetModelStatusImpl: one version when the spec names one, else all; a version_label is ignored there."""
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    spec = request.model_spec
    statuses = manager.statuses(spec.name, spec.version.value if spec.HasField("version") else None)
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in statuses:
        entry = response.model_version_status.add()
        entry.version = status.version
        entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state)
        entry.status.error_code = status.error_code.value[0]
        entry.status.error_message = status.error_message
    return response


def _fill_result_classify(target: classification_pb2.ClassificationResult,
                          results: list[list[inference.Classification]]) -> None:
    for row in results:
        classifications = target.classifications.add()
        for item in row:
            classifications.classes.add(label=item.label, score=item.score)


def _fill_result_regress(target: regression_pb2.RegressionResult, values: list[float]) -> None:
    for value in values:
        target.regressions.add(value=value)


class ModelService(model_service_pb2_grpc.ModelServiceServicer, _Handler):
    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest,
                       context: grpc.ServicerContext) -> get_model_status_pb2.GetModelStatusResponse:
        return self._serve(context, None, request.model_spec.name, lambda: model_status(self.manager, request))

    def HandleReloadConfigRequest(self, request: model_management_pb2.ReloadConfigRequest,
                                  context: grpc.ServicerContext) -> model_management_pb2.ReloadConfigResponse:
        """model_service_impl.cc: only a model_config_list is accepted; ServerCore::ReloadConfig's refusals keep
        their codes (e.g. FAILED_PRECONDITION for a label on an unavailable version); metric_names are answered
        with how much each metric grew during the reload."""
        def work() -> model_management_pb2.ReloadConfigResponse:
            before = {name: self.metrics.first_value(name) for name in request.metric_names}
            if request.config.WhichOneof("config") != "model_config_list":
                raise invalid_argument("ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                                       "ModelConfigList is currently supported")
            problem = config_list_problem(request.config)
            if problem:
                raise invalid_argument(problem)
            self.manager.apply_config(request.config)
            response = model_management_pb2.ReloadConfigResponse()
            for name, value in before.items():
                response.metric.add(name=name, int64_value_increase=self.metrics.first_value(name) - value)
            return response

        return self._serve(context, None, "", work)


def build_grpc_server(manager: ModelManager, metrics: Metrics, address: str, max_workers: int,
                      channel_arguments: Sequence[tuple[str, int | str]] = (), max_queued: int = 64,
                      front: str = "auto") -> NativeServer | GrpcioServer:
    """A gRPC server (not started: no worker runs a call yet) with every service registered and its port bound;
    RuntimeError if it cannot. Message sizes are bounded (DEFAULT_MAX_*_BYTES); --grpc_channel_arguments override
    any option. At most max_workers + max_queued calls are running or waiting: more are refused with
    RESOURCE_EXHAUSTED. Its `health` is grpc.health.v1's status, set by update_health."""
    options: dict[str, int | str] = {"grpc.max_receive_message_length": DEFAULT_MAX_RECEIVE_BYTES,
                                     "grpc.max_send_message_length": DEFAULT_MAX_SEND_BYTES, "grpc.so_reuseport": 0}
    options.update(channel_arguments)  # one value per key: which duplicate gRPC would honour is not documented
    predictions, models = PredictionService(manager, metrics), ModelService(manager, metrics)
    registrations = [
        lambda server: prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(predictions, server),
        lambda server: model_service_pb2_grpc.add_ModelServiceServicer_to_server(models, server),
    ]
    return choose_front(front)(registrations, address, list(options.items()), max_workers, max_queued)


def update_health(health_servicer: health.HealthServicer | NativeHealth, manager: ModelManager) -> None:
    """SERVING overall only when every model has an available version; per model under its name."""
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    names = manager.model_names()
    all_available = bool(names)
    for name in names:
        available = manager.has_available(name)
        all_available &= available
        health_servicer.set(name, serving if available else not_serving)
    health_servicer.set("", serving if all_available else not_serving)
