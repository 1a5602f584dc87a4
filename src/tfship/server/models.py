"""Servables: model versions loaded once from /base_path/<version>/, chosen by version policy, hot-swapped.

A request takes a reference to one ModelVersion and keeps it to the end, so a version unloaded by the poller
finishes its in-flight requests; new versions are loaded before old ones are dropped (availability preserving).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.config import model_server_config_pb2

from tfship.server.batching import BatchingOptions, BatchScheduler
from tfship.server.tensors import data_type_string
from tfship.server.status import ServingError, code_from_number, failed_precondition, invalid_argument, not_found

log = logging.getLogger("tfship.server")

DEFAULT_SIGNATURE = "serving_default"
_HIDDEN_SIGNATURES = {"__saved_model_init_op"}


class VersionState:
    """ModelVersionStatus.State names, as GetModelStatus reports them."""

    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


@dataclass
class VersionStatus:
    version: int
    state: str
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""


@dataclass(frozen=True)
class InputSpec:
    dtype: tf.DType
    numpy_dtype: np.dtype

    @classmethod
    def of(cls, dtype_enum: int) -> "InputSpec":
        dtype = tf.dtypes.as_dtype(dtype_enum)
        return cls(dtype, np.dtype(object) if dtype == tf.string else np.dtype(dtype.as_numpy_dtype))


class Signature:
    """One SignatureDef of a loaded version and the concrete function that runs it (built once, at load)."""

    def __init__(self, name: str, definition: meta_graph_pb2.SignatureDef, function: Callable[..., Any],
                 batching: BatchingOptions | None = None):
        self.name = name
        self.definition = definition
        self.method_name = definition.method_name
        self.function = function
        self.inputs = {alias: InputSpec.of(info.dtype) for alias, info in definition.inputs.items()}
        self.output_aliases = sorted(definition.outputs)
        self._batcher = BatchScheduler(self._execute, name, batching) if batching else None
        self._call = _direct_caller(function, self.inputs) or self._keyword_call

    def run(self, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """PreProcessPrediction's checks (predict_util.cc), in its order and words, then the computation."""
        wanted = self.check_request(inputs, output_filter)
        if self._batcher is not None:
            return self._batcher.run(inputs, wanted)
        return self._execute(inputs, wanted)

    def check_request(self, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str]) -> tuple[str, ...]:
        """The output aliases to fetch, or INVALID_ARGUMENT as TF Serving words it."""
        expected = sorted(self.inputs)
        if len(inputs) != len(self.inputs):  # VerifyRequestInputsSize (SignatureDef defaults are not supported)
            sent = sorted(inputs)
            raise invalid_argument(
                f"input size does not match signature: {len(inputs)}!={len(self.inputs)} len({{{','.join(sent)}}}) "
                f"!= len({{{','.join(expected)}}}). Sent extra: {{{','.join(sorted(set(sent) - set(expected)))}}}. "
                f"Missing but required: {{{','.join(sorted(set(expected) - set(sent)))}}}."
            )
        for alias in sorted(inputs):
            if alias not in self.inputs:
                raise invalid_argument(f"input tensor alias not found in signature: {alias}. "
                                       f"Inputs expected to be in the set {{{','.join(expected)}}}.")
        seen: set[str] = set()
        for alias in output_filter:
            if alias not in self.definition.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                    f"{{{','.join(self.output_aliases)}}}."
                )
            if alias in seen:
                raise invalid_argument(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        for position, alias in enumerate(expected):  # the session's feed order: arg[i]
            array = inputs[alias]
            spec = self.inputs[alias]
            if array.dtype != spec.numpy_dtype and not (spec.dtype == tf.string and array.dtype.kind in "OSU"):
                given = tf.dtypes.as_dtype(tf.string if array.dtype.kind in "OSU" else array.dtype)
                expected_name = data_type_string(spec.dtype.as_datatype_enum)
                raise invalid_argument(f"Expects arg[{position}] to be {expected_name} but "
                                       f"{data_type_string(given.as_datatype_enum)} is provided")
        return tuple(output_filter) or tuple(self.output_aliases)

    def _keyword_call(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, Any]:
        return self.function(**{alias: tf.constant(array, dtype=self.inputs[alias].dtype)
                                for alias, array in inputs.items()})

    def _execute(self, inputs: Mapping[str, np.ndarray], wanted: tuple[str, ...]) -> dict[str, np.ndarray]:
        try:
            outputs = self._call(inputs)
        except tf.errors.OpError as error:
            raise ServingError(code_from_number(error.error_code), op_error_summary(error.message))
        except (ValueError, TypeError) as error:  # the concrete function refused the shapes or structure
            raise invalid_argument(str(error).split("\n")[0])
        return {alias: _as_array(outputs[alias].numpy()) for alias in wanted}


def _as_array(value: Any) -> np.ndarray:
    """Tensor.numpy() gives a numpy scalar, or bytes for a string, when the tensor is a scalar."""
    return np.array(value, dtype=object) if isinstance(value, bytes) else np.asarray(value)


def _predict_signature_missing(name: str) -> ServingError:
    return failed_precondition(f"Serving signature key \"{name}\" not found.")


def _direct_caller(function: Callable[..., Any],
                   inputs: Mapping[str, InputSpec]) -> Callable[[Mapping[str, np.ndarray]], Mapping[str, Any]] | None:
    """The loaded signature run as TensorFlow's eager runtime runs it in the end (TFE_Py_Execute of the traced
    function), without the Python layers a ConcreteFunction call goes through first: keyword binding, input
    canonicalization, tf.constant, gradient-tape and graph-mode checks, call options rebuilt per call. They are
    more than half of a small model's call (half_plus_two: 244 us by keyword, 86 us so; profiled on one core).
    Same outputs and runtime errors (as tf.errors.OpError); None, for the keyword call, when the function is not
    the kind this was checked with (a different TensorFlow) or its inputs are not all named in its signature."""
    from tensorflow.python import pywrap_tfe
    from tensorflow.python.eager import context, core
    from tensorflow.python.framework import ops

    try:
        structured = function.structured_input_signature
        traced = function._inference_function
        op_name = traced.name.decode()
        output_count = len(traced.function_type.flat_outputs)
        pack_outputs = function.function_type.pack_output
        captured = list(function.captured_inputs)  # variables the graph reads; fixed for the loaded version
        eager = context.context()
        eager.ensure_initialized()
        call_attributes = tuple(item for pair in eager.function_call_options.as_attrs().items() for item in pair)
        execute, not_ok, to_error, eager_tensor = pywrap_tfe.TFE_Py_Execute, core._NotOkStatusException, \
            core._status_to_exception, ops.EagerTensor
    except AttributeError:
        return None
    aliases = sorted(inputs)  # the traced function's flat inputs, in nest's (sorted) order
    if not structured or structured[0] or sorted(structured[1]) != aliases:
        return None
    dtype_enums = [inputs[alias].dtype.as_datatype_enum for alias in aliases]
    context_handle = eager._handle

    def call(arrays: Mapping[str, np.ndarray]) -> Mapping[str, Any]:
        device = eager.device_name  # per thread
        tensors = [eager_tensor(arrays[alias], device, dtype) for alias, dtype in zip(aliases, dtype_enums)]
        try:
            flat = execute(context_handle, device, op_name, tensors + captured, call_attributes, output_count)
        except not_ok as error:
            raise to_error(error) from None
        return pack_outputs(flat)

    return call


_FUNCTION_TAG = re.compile(r"\{\{function_node [^}]*\}\}\s*")


def op_error_summary(message: str) -> str:
    """The line of a TensorFlow runtime error that says what went wrong, without eager-mode boilerplate."""
    boilerplate = ("Graph execution error:", "Detected at node", "<stack traces unavailable>", "File ")
    message = _FUNCTION_TAG.sub("", message)  # "{{function_node __inference_...}} ": the runtime's, not the user's
    for line in message.splitlines():
        if line.strip() and not line[0].isspace() and not line.startswith(boilerplate):
            return line
    return message.strip().splitlines()[0] if message.strip() else "TensorFlow runtime error"


class ModelVersion:
    """A loaded SavedModel version: its signatures ready to run and its SignatureDefs for metadata."""

    def __init__(self, model_name: str, version: int, path: str, batching: BatchingOptions | None = None):
        self.model_name = model_name
        self.version = version
        self.path = path
        meta_graph = _serving_meta_graph(path)
        self._loaded = tf.saved_model.load(path, tags=["serve"])  # kept alive: signatures reference its variables
        available = self._loaded.signatures
        self.signatures: dict[str, Signature] = {}
        for name, definition in meta_graph.signature_def.items():
            if name in _HIDDEN_SIGNATURES or name not in available:
                continue
            self.signatures[name] = Signature(name, definition, available[name], batching)

    def signature(self, name: str, missing: Callable[[str], ServingError] | None = None) -> Signature:
        """The signature called `name` (serving_default when empty); when there is none, the error `missing`
        makes of the name (each API words it its own way), by default Predict's FAILED_PRECONDITION."""
        name = name or DEFAULT_SIGNATURE
        found = self.signatures.get(name)
        if found is None:
            raise (missing or _predict_signature_missing)(name)
        return found

    def signature_def_map(self) -> get_model_metadata_pb2.SignatureDefMap:
        result = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in self.signatures.items():
            result.signature_def[name].CopyFrom(signature.definition)
        return result


def _serving_meta_graph(path: str) -> meta_graph_pb2.MetaGraphDef:
    pb_path = os.path.join(path, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    try:
        with open(pb_path, "rb") as handle:
            saved_model.ParseFromString(handle.read())
    except FileNotFoundError:
        raise RuntimeError(f"{pb_path} does not exist: not a SavedModel directory")
    except Exception as error:  # noqa: BLE001 - a truncated or foreign file
        raise RuntimeError(f"{pb_path} is not a SavedModel: {error}")
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return meta_graph
    raise RuntimeError(f"{pb_path} has no MetaGraph tagged 'serve'")


def versions_on_disk(base_path: str) -> dict[int, str]:
    """Integer-named subdirectories of base_path (others are ignored, as TF Serving does)."""
    try:
        entries = os.listdir(base_path)
    except OSError:
        return {}
    found: dict[int, str] = {}
    for entry in entries:
        if entry.isdigit() and os.path.isdir(os.path.join(base_path, entry)):
            found[int(entry)] = os.path.join(base_path, entry)
    return found


def aspired_versions(config: model_server_config_pb2.ModelConfig, on_disk: Sequence[int]) -> set[int]:
    policy = config.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    ordered = sorted(on_disk, reverse=True)
    if kind == "all":
        return set(ordered)
    if kind == "specific":
        return set(policy.specific.versions) & set(ordered)
    count = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions > 0 else 1
    return set(ordered[:count])


@dataclass
class ManagedModel:
    config: model_server_config_pb2.ModelConfig
    available: dict[int, ModelVersion] = field(default_factory=dict)  # replaced, never mutated: lock-free reads
    statuses: dict[int, VersionStatus] = field(default_factory=dict)
    failed_paths: set[str] = field(default_factory=set)

    @property
    def labels(self) -> Mapping[str, int]:
        return self.config.version_labels


class ModelManager:
    """Loads, serves and unloads versions of the configured models."""

    def __init__(self, allow_labels_for_unavailable: bool = False, batching: BatchingOptions | None = None,
                 warm_up: Callable[[ModelVersion], None] | None = None):
        self._models: dict[str, ManagedModel] = {}
        self._batching = batching
        self._warm_up = warm_up  # runs on each new version before it becomes AVAILABLE; raising fails the load
        self._sync_lock = threading.Lock()
        self._allow_labels_for_unavailable = allow_labels_for_unavailable
        self.on_change: Callable[[], None] = lambda: None

    # --- configuration and polling ---

    def apply_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Serve exactly the models of config: new ones loaded now, dropped ones unloaded. As ServerCore::
        ReloadConfig, version labels are checked first, against the versions available now: a refused config
        changes nothing."""
        with self._sync_lock:
            self._check_labels(config)
            candidate: dict[str, ManagedModel] = {}
            for model_config in config.model_config_list.config:
                current = self._models.get(model_config.name)
                if current is None:
                    candidate[model_config.name] = ManagedModel(config=model_config)
                else:
                    candidate[model_config.name] = ManagedModel(
                        model_config, dict(current.available), dict(current.statuses), set(current.failed_paths))
            for managed in candidate.values():
                self._sync_model(managed)
            self._models = candidate
        self.on_change()

    def poll(self) -> None:
        """Look at every base path once: load new aspired versions, unload the ones no longer aspired."""
        with self._sync_lock:
            for managed in list(self._models.values()):
                self._sync_model(managed)
        self.on_change()

    def _check_labels(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """UpdateModelVersionLabelMap: a label may only name a version available now, so at start-up (nothing is
        loaded yet) and when a reload adds a version and labels it at once, labels are refused. With
        --allow_version_labels_for_unavailable_models a label that is new, or keeps its version, may name any
        version; moving an existing label still needs an available version (no requests dropped mid-swap)."""
        for model_config in config.model_config_list.config:
            current = self._models.get(model_config.name)
            available = current.available if current is not None else {}
            existing_labels = current.labels if current is not None else {}
            for label, version in model_config.version_labels.items():
                allowed = self._allow_labels_for_unavailable and existing_labels.get(label, version) == version
                if not allowed and version not in available:
                    raise failed_precondition(
                        f"Request to assign label to version {version} of model {model_config.name}, "
                        "which is not currently available for inference")

    def _sync_model(self, managed: ManagedModel) -> None:
        name = managed.config.name
        on_disk = versions_on_disk(managed.config.base_path)
        if not on_disk:
            log.warning("No versions of servable %s found under base path %s", name, managed.config.base_path)
        aspired = aspired_versions(managed.config, list(on_disk))
        managed.failed_paths &= set(on_disk.values())  # a version removed and put back gets a fresh try
        available = dict(managed.available)
        for version in sorted(aspired - set(available)):
            path = on_disk[version]
            if path in managed.failed_paths:
                continue
            managed.statuses[version] = VersionStatus(version, VersionState.LOADING)
            started = time.monotonic()
            try:
                loaded = ModelVersion(name, version, path, self._batching)
                if self._warm_up is not None:
                    self._warm_up(loaded)
                available[version] = loaded
            except Exception as error:  # noqa: BLE001 - a bad version must not take down the others
                message = f"Failed to load servable version {version} of {name} from {path}: {error}"
                log.error("%s", message.split("\n")[0])
                managed.failed_paths.add(path)
                managed.statuses[version] = VersionStatus(
                    version, VersionState.END, grpc.StatusCode.UNKNOWN, message.split("\n")[0]
                )
                continue
            log.info("Successfully loaded servable version {name: %s version: %d} in %.2fs",
                     name, version, time.monotonic() - started)
            managed.statuses[version] = VersionStatus(version, VersionState.AVAILABLE)
        # Keep serving what we have when every aspired version failed, rather than serve nothing.
        if aspired & set(available):
            for version in sorted(set(available) - aspired):
                del available[version]
                managed.statuses[version] = VersionStatus(version, VersionState.END)
                log.info("Unloaded servable version {name: %s version: %d}", name, version)
        managed.available = available

    # --- lookups used by requests ---

    def model_names(self) -> list[str]:
        return sorted(self._models)

    def has_available(self, name: str) -> bool:
        managed = self._models.get(name)
        return bool(managed and managed.available)

    def initial_failures(self) -> list[str]:
        """Messages of models that have no available version and at least one failed one."""
        failures = []
        for name, managed in self._models.items():
            if not managed.available:
                errors = [s.error_message for s in managed.statuses.values() if s.error_code != grpc.StatusCode.OK]
                if errors:
                    failures.append(errors[-1])
        return failures

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> ModelVersion:
        managed = self._models.get(name)
        if label is not None:
            if managed is None or label not in managed.labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = managed.labels[label]
        if managed is not None:
            available = managed.available
            if version is None and available:
                return available[max(available)]
            if version is not None and version in available:
                return available[version]
        request = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
        raise not_found(f"Servable not found for request: {request}")

    def statuses(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """GetModelStatus: the state of one version, or of every version the model has had (latest first)."""
        managed = self._models.get(name)
        if version is not None:
            if managed is None or version not in managed.statuses:
                raise not_found(f"Could not find version {version} of model {name}")
            return [managed.statuses[version]]
        if managed is None or not managed.statuses:
            raise not_found(f"Could not find any versions of model {name}")
        return [managed.statuses[v] for v in sorted(managed.statuses, reverse=True)]
