"""Tiny SavedModels built with tf.Module in a temp dir, so server tests need no exporter code."""

from __future__ import annotations

import os
import shutil
import tempfile

import tensorflow as tf


class _Linear(tf.Module):
    """y = scale * x + offset, with predict, classify and regress signatures like TF Serving's test models."""

    def __init__(self, scale: float, offset: float):
        super().__init__()
        self.scale = tf.Variable(scale)
        self.offset = tf.Variable(offset)

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def predict(self, x):
        return {"y": self.scale * x + self.offset}

    def _x_from_examples(self, serialized):
        parsed = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})
        return parsed["x"]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        y = self.scale * self._x_from_examples(inputs) + self.offset
        batch = tf.shape(y)[0]
        return {"classes": tf.tile(tf.constant([["low", "high"]]), [batch, 1]),
                "scores": tf.concat([1.0 - y, y], axis=1)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs):
        return {"outputs": self.scale * self._x_from_examples(inputs) + self.offset}

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name="iterations")])
    def busy(self, iterations):
        """Spins for `iterations` loop steps: a request that stays in flight long enough to test draining."""
        _, total = tf.while_loop(lambda i, acc: i < iterations,
                                 lambda i, acc: (i + 1, acc * 0.5 + 1.0),
                                 (tf.constant(0), tf.constant(0.0)))
        return {"total": total}


class _Counting(_Linear):
    """_Linear plus signatures that reveal how the server ran them: how many times `count` ran (warmup
    included), and how many rows the model saw in one run (batching merges and pads requests)."""

    def __init__(self) -> None:
        super().__init__(1.0, 0.0)
        self.calls = tf.Variable(0.0)

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def count(self, x):
        calls = self.calls.assign_add(1.0)
        return {"y": tf.zeros_like(x) + calls}

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def rows(self, x):
        return {"y": tf.zeros_like(x) + tf.cast(tf.shape(x)[0], tf.float32)}


def save_linear_model(base_path: str, version: int, scale: float, offset: float, counting: bool = False) -> str:
    """Write version `version` of a linear model under base_path atomically (built aside, then renamed);
    `counting` adds the `count` and `rows` signatures of _Counting (then scale 1, offset 0)."""
    module = _Counting() if counting else _Linear(scale, offset)
    signatures = {
        "serving_default": module.predict,
        "classify_x": module.classify.get_concrete_function(),
        "regress_x": module.regress.get_concrete_function(),
        "busy": module.busy,
    }
    if counting:
        signatures.update(count=module.count, rows=module.rows)
    os.makedirs(base_path, exist_ok=True)
    staging = tempfile.mkdtemp(dir=base_path, prefix=".staging-")
    tf.saved_model.save(module, staging, signatures=signatures)
    _set_method_names(staging, {"classify_x": "tensorflow/serving/classify", "regress_x": "tensorflow/serving/regress"})
    target = os.path.join(base_path, str(version))
    os.rename(staging, target)
    return target


def _set_method_names(path: str, method_names: dict[str, str]) -> None:
    """tf.saved_model.save marks every signature 'predict'; TF Serving needs classify/regress method names."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb_path = os.path.join(path, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with open(pb_path, "rb") as handle:
        saved_model.ParseFromString(handle.read())
    for meta_graph in saved_model.meta_graphs:
        for name, method in method_names.items():
            meta_graph.signature_def[name].method_name = method
    with open(pb_path, "wb") as handle:
        handle.write(saved_model.SerializeToString())


def save_broken_version(base_path: str, version: int) -> str:
    """A version directory whose saved_model.pb is garbage: it must fail to load without harming others."""
    target = os.path.join(base_path, str(version))
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, "saved_model.pb"), "wb") as handle:
        handle.write(b"this is not a SavedModel")
    return target


def copy_version(source_version_dir: str, base_path: str, version: int) -> str:
    os.makedirs(base_path, exist_ok=True)
    staging = tempfile.mkdtemp(dir=base_path, prefix=".staging-")
    shutil.rmtree(staging)
    shutil.copytree(source_version_dir, staging)
    target = os.path.join(base_path, str(version))
    os.rename(staging, target)
    return target


class _Echo(tf.Module):
    """Signatures that hand their inputs back unchanged, so a REST answer shows the tensor the server built
    from the JSON request (TF Serving's json_tensor_test.cc checks those tensors directly)."""

    @tf.function(input_signature=[tf.TensorSpec(None, tf.int32, name="default")])
    def int32(self, default):
        return {"default": tf.identity(default)}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="default")])
    def float32(self, default):
        return {"default": tf.identity(default)}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float64, name="default")])
    def float64(self, default):
        return {"default": tf.identity(default)}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.string, name="default")])
    def string(self, default):
        return {"default": tf.identity(default)}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.int32, name="int_tensor"),
                                  tf.TensorSpec(None, tf.string, name="str_tensor"),
                                  tf.TensorSpec(None, tf.float32, name="float_tensor"),
                                  tf.TensorSpec(None, tf.float64, name="dbl_tensor")])
    def four(self, int_tensor, str_tensor, float_tensor, dbl_tensor):
        return {"int_tensor": tf.identity(int_tensor), "str_tensor": tf.identity(str_tensor),
                "float_tensor": tf.identity(float_tensor), "dbl_tensor": tf.identity(dbl_tensor)}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.int32, name="int_tensor"),
                                  tf.TensorSpec(None, tf.string, name="str_tensor"),
                                  tf.TensorSpec(None, tf.string, name="bin_tensor")])
    def with_bin(self, int_tensor, str_tensor, bin_tensor):
        return {"int_tensor": tf.identity(int_tensor), "str_tensor": tf.identity(str_tensor),
                "bin_tensor": tf.identity(bin_tensor)}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.int32, name="int_tensor"),
                                  tf.TensorSpec(None, tf.string, name="str_tensor")])
    def int_str(self, int_tensor, str_tensor):
        return {"int_tensor": tf.identity(int_tensor), "str_tensor": tf.identity(str_tensor)}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.string, name="str_tensor")])
    def str_only(self, str_tensor):
        return {"str_tensor": tf.identity(str_tensor)}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.string, name="x_bytes")])
    def bytes_out(self, x_bytes):
        return {"y_bytes": tf.identity(x_bytes)}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="x")])
    def scalar_out(self, x):
        return {"sum": tf.reduce_sum(x)}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="x")])
    def uneven_batches(self, x):
        return {"a": tf.identity(x), "b": tf.concat([x, x], axis=0)}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="x")])
    def empty_batches(self, x):
        return {"a": x[:0], "b": x[:0]}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float16, name="x")])
    def half(self, x):
        return {"y": tf.identity(x)}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="x")])
    def complex_out(self, x):
        return {"z": tf.complex(x, x)}


def save_echo_model(base_path: str, version: int) -> str:
    """The echo model: one signature per dtype ("int32", "float32", ...; serving_default is int32), the
    multi-input ones of json_tensor_test.cc ("four", "with_bin", "int_str", "str_only") and a few whose outputs
    cannot be written in the row format ("scalar_out", "uneven_batches")."""
    module = _Echo()
    names = ["int32", "float32", "float64", "string", "four", "with_bin", "int_str", "str_only", "bytes_out",
             "scalar_out", "uneven_batches", "empty_batches", "half", "complex_out"]
    signatures = {name: getattr(module, name) for name in names}
    signatures["serving_default"] = module.int32
    signatures["custom_method"] = module.float32.get_concrete_function()
    os.makedirs(base_path, exist_ok=True)
    staging = tempfile.mkdtemp(dir=base_path, prefix=".staging-")
    tf.saved_model.save(module, staging, signatures=signatures)
    _set_method_names(staging, {"custom_method": "not/supported/method"})
    target = os.path.join(base_path, str(version))
    os.rename(staging, target)
    return target
