"""Which models to serve: --model_name/--model_base_path or a text-format ModelServerConfig, plus monitoring."""

from __future__ import annotations

import os
from dataclasses import dataclass

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from tensorflow_serving.config import model_server_config_pb2

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


def _monitoring_config_class() -> type:
    """tensorflow_serving.MonitoringConfig, which the pip package does not ship: declared here, same fields."""
    proto_file = descriptor_pb2.FileDescriptorProto(
        name="tfship_monitoring_config.proto", package="tensorflow.serving", syntax="proto3"
    )
    prometheus = proto_file.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
                         label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                         label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    monitoring = proto_file.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                         type_name=".tensorflow.serving.PrometheusConfig",
                         label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto_file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))


def read_monitoring_config(path: str) -> MonitoringOptions:
    if not path:
        return MonitoringOptions()
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise FlagError(f"cannot read --monitoring_config_file={path}: {error.strerror}")
    config = _monitoring_config_class()()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise FlagError(f"Error parsing text-format tensorflow.serving.MonitoringConfig in {path}: {error}")
    prometheus = config.prometheus_config
    return MonitoringOptions(prometheus.enable, prometheus.path or DEFAULT_METRICS_PATH)
