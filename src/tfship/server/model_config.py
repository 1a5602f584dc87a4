"""Which models to serve: --model_name/--model_base_path or a text-format ModelServerConfig, plus the monitoring
and batching parameter files (text-format protos too)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from google.protobuf.message import Message
from tensorflow_serving.config import model_server_config_pb2

from tfship.server.batching import BatchingOptions
from tfship.server.flags import FlagError, ServerOptions

ModelServerConfig = model_server_config_pb2.ModelServerConfig
ModelConfig = model_server_config_pb2.ModelConfig

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"


def parse_model_server_config(text: str, where: str) -> ModelServerConfig:
    """A validated ModelServerConfig from its text format; FlagError names the file and the problem."""
    config = ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise FlagError(f"Error parsing text-format tensorflow.serving.ModelServerConfig in {where}: {error}")
    validate_model_server_config(config, where)
    return config


def validate_model_server_config(config: ModelServerConfig, where: str) -> None:
    """FlagError naming `where` when config is one tfship cannot serve (config_list_problem)."""
    problem = config_list_problem(config)
    if problem:
        raise FlagError(f"{where}: {problem}")


def config_list_problem(config: ModelServerConfig) -> str | None:
    """What ServerCore::ValidateModelConfigList refuses, in its words; None when the config can be served."""
    if config.WhichOneof("config") != "model_config_list":
        return "only model_config_list is supported (custom_model_config is not)"
    seen: set[str] = set()
    for model in config.model_config_list.config:
        if not model.name:
            return "a model config has no name"
        if model.name in seen:
            return f"Illegal to list model {model.name} multiple times in config list"
        seen.add(model.name)
        if not model.base_path or not (os.path.isabs(model.base_path) or "://" in model.base_path):
            return f"Expected model {model.name} to have an absolute path or URI; got base_path()={model.base_path}"
        if model.model_platform not in ("", "tensorflow"):
            return f"model {model.name!r} has platform {model.model_platform!r}; only tensorflow is served"
    return None


def read_model_server_config(path: str) -> ModelServerConfig:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise FlagError(f"cannot read --model_config_file={path}: {error.strerror}")
    return parse_model_server_config(text, path)


def initial_model_server_config(options: ServerOptions) -> ModelServerConfig:
    """The config file if given (TF Serving lets it win over --model_name), else the one model of the flags."""
    if options.model_config_file:
        return read_model_server_config(options.model_config_file)
    config = ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = options.model_name
    model.base_path = os.path.abspath(options.model_base_path)
    model.model_platform = "tensorflow"
    return config


@dataclass(frozen=True)
class MonitoringOptions:
    prometheus_enabled: bool = False
    prometheus_path: str = DEFAULT_METRICS_PATH


_FIELD = descriptor_pb2.FieldDescriptorProto


def _declared_message(proto_file: descriptor_pb2.FileDescriptorProto, full_name: str) -> type:
    """A message class for a TF Serving proto the pip package does not ship, declared here with the same fields
    (so its text format parses exactly as TF Serving's)."""
    pool = descriptor_pool.DescriptorPool()
    if "google/protobuf/wrappers.proto" in proto_file.dependency:
        pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto_file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))


def _monitoring_config_class() -> type:
    """tensorflow.serving.MonitoringConfig (tensorflow_serving/config/monitoring_config.proto)."""
    proto_file = descriptor_pb2.FileDescriptorProto(
        name="tfship_monitoring_config.proto", package="tensorflow.serving", syntax="proto3"
    )
    prometheus = proto_file.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=_FIELD.TYPE_BOOL, label=_FIELD.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=_FIELD.TYPE_STRING, label=_FIELD.LABEL_OPTIONAL)
    monitoring = proto_file.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1, type=_FIELD.TYPE_MESSAGE,
                         type_name=".tensorflow.serving.PrometheusConfig", label=_FIELD.LABEL_OPTIONAL)
    return _declared_message(proto_file, "tensorflow.serving.MonitoringConfig")


def _batching_parameters_class() -> type:
    """tensorflow.serving.BatchingParameters (tensorflow_serving/servables/tensorflow/session_bundle_config.proto)."""
    proto_file = descriptor_pb2.FileDescriptorProto(
        name="tfship_batching_parameters.proto", package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = proto_file.message_type.add(name="BatchingParameters")
    for number, name in enumerate(("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                                   "num_batch_threads"), start=1):
        message.field.add(name=name, number=number, type=_FIELD.TYPE_MESSAGE, label=_FIELD.LABEL_OPTIONAL,
                          type_name=".google.protobuf.Int64Value")
    message.field.add(name="thread_pool_name", number=5, type=_FIELD.TYPE_MESSAGE, label=_FIELD.LABEL_OPTIONAL,
                      type_name=".google.protobuf.StringValue")
    message.field.add(name="allowed_batch_sizes", number=6, type=_FIELD.TYPE_INT64, label=_FIELD.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7, type=_FIELD.TYPE_BOOL,
                      label=_FIELD.LABEL_OPTIONAL)
    return _declared_message(proto_file, "tensorflow.serving.BatchingParameters")


def _read_text_proto(path: str, flag: str, message: Message) -> Message:
    """`message` filled from the text-format file of --flag; FlagError names the file and the problem."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise FlagError(f"cannot read --{flag}={path}: {error.strerror}")
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise FlagError(f"Error parsing text-format {message.DESCRIPTOR.full_name} in {path}: {error}")
    return message


def read_batching_parameters(path: str) -> BatchingOptions:
    """--batching_parameters_file (text format, as TF Serving's) over the server's defaults; FlagError names the
    file and the problem. pad_variable_length_inputs is not supported: inputs of other shapes run separately."""
    defaults = BatchingOptions()
    if not path:
        return defaults
    parameters = _read_text_proto(path, "batching_parameters_file", _batching_parameters_class()())
    if parameters.pad_variable_length_inputs:
        raise FlagError(f"{path}: pad_variable_length_inputs is not supported by tfship.server")

    def wrapped(name: str) -> int:
        return getattr(parameters, name).value if parameters.HasField(name) else getattr(defaults, name)

    options = BatchingOptions(
        max_batch_size=wrapped("max_batch_size"),
        batch_timeout_micros=wrapped("batch_timeout_micros"),
        max_enqueued_batches=wrapped("max_enqueued_batches"),
        num_batch_threads=wrapped("num_batch_threads"),
        allowed_batch_sizes=tuple(parameters.allowed_batch_sizes),
    )
    problems = options.problems()
    if problems:
        raise FlagError(f"{path}: {problems[0]}")
    return options


def read_monitoring_config(path: str) -> MonitoringOptions:
    if not path:
        return MonitoringOptions()
    config = _read_text_proto(path, "monitoring_config_file", _monitoring_config_class()())
    prometheus = config.prometheus_config
    return MonitoringOptions(prometheus.enable, prometheus.path or DEFAULT_METRICS_PATH)
