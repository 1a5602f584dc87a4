"""Importing the user's own models: Keras files and TF1 checkpoints become SavedModels; every model gets checks.

What `model.add PATH` accepts (`kind_of`):
  saved_model  a folder holding saved_model.pb (copied as it is)
  keras        a `.keras` file (Keras 3) or a `.h5`/`.hdf5` file (legacy HDF5, whole model, not weights only).
               Written as a SavedModel with one `serving_default` predict signature: one input per model input,
               named after the Keras Input (`keras.Input(name=...)`, e.g. `features`), one output per model
               output, named after the layer that produces it (e.g. `probabilities` or `dense_1`).
  checkpoint   a TensorFlow 1 checkpoint *with its graph*: `PREFIX.meta` (the MetaGraphDef that tf.compat.v1's
               Saver writes), `PREFIX.index` and `PREFIX.data-*`. PATH may be any of those files, the prefix, or
               the checkpoint folder (its `checkpoint` file names the newest). The weights are restored into the
               graph and written with SavedModelBuilder. The serving signature comes from, in order: `--inputs` /
               `--outputs` (tensor names such as `x:0`), a `serving_default` SignatureDef already in the .meta, or
               the graph collections `inputs` and `outputs` (tf.compat.v1.add_to_collection before saving).
               A TF2 object checkpoint (tf.train.Checkpoint) holds weights only and no graph: tfship cannot
               rebuild a model from it, so it is refused with the hint to save a SavedModel.

Generated smoke checks (`ensure_smoke_sample`): for a model with no assets.extra/smoke_sample.json, a few rows are
generated from the serving signature (its dtypes and shapes, a seeded batch) and the model's answers, computed by
loading the SavedModel locally, are recorded in the same file with `"generated": true` and a tolerance
(`{"atol": ..., "rtol": ...}`): the smoke test then requires every replica to give those answers within it.

TensorFlow work runs in a child process (`python -m tfship.importers ...`): TensorFlow's import is slow, its native
logging would spill into the task's output, and a crashing model cannot take the task down with it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from tfship.host import proc
from tfship.errors import ModelError
from tfship.exporters.common import EXTRA_DIR, SMOKE_SAMPLE_FILE

SAVED_MODEL, KERAS, CHECKPOINT = "saved_model", "keras", "checkpoint"
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
RESULT_PREFIX = "tfship-import-result "
IMPORT_TIMEOUT = 600.0

# Generated checks: rows per request and the tolerance replicas must meet. Same TensorFlow, same CPU kernels give
# equal answers; other builds (TF Serving's C++ runtime, other CPUs) differ in the last bits, never by this much.
GENERATED_ROWS = 3
GENERATED_ATOL = 1e-4
GENERATED_RTOL = 1e-3
GENERATED_SEED = 0
UNKNOWN_DIM = 4  # size given to a non-batch dimension the signature leaves open

_SUPPORTED = "a SavedModel folder, a Keras .keras/.h5 file, or a TF1 checkpoint with its .meta graph"


# --------------------------------------------------------------------------------------------------------------
# What PATH is


def kind_of(source: Path) -> str:
    """saved_model, keras or checkpoint; anything else is a ModelError naming the file and what to give instead."""
    if source.is_dir():
        if (source / "saved_model.pb").is_file():
            return SAVED_MODEL
        if (source / "checkpoint").is_file() or any(source.glob("*.index")):
            resolve_checkpoint(source)  # a missing graph or index is refused now, before any work
            return CHECKPOINT
        inner = sorted(p.name for p in source.iterdir() if p.is_dir() and (p / "saved_model.pb").is_file())
        if inner:
            raise ModelError(
                f"{source} holds versions ({', '.join(inner)}), not a SavedModel itself",
                f"add one version at a time, e.g.: invoke model.add {source / inner[-1]} --name NAME",
            )
        raise ModelError(f"{source} holds no saved_model.pb, Keras file or checkpoint", f"give {_SUPPORTED}")
    if source.suffix.lower() in KERAS_SUFFIXES:
        if not source.is_file():
            raise ModelError(f"{source} does not exist", "check the path of the Keras file")
        return KERAS
    if _checkpoint_prefix(source) is not None and source.parent.is_dir():
        resolve_checkpoint(source)
        return CHECKPOINT
    if not source.exists():
        raise ModelError(f"{source} is not a folder or a model file (it does not exist)", f"give {_SUPPORTED}")
    raise ModelError(f"{source} is not a model tfship can import", f"give {_SUPPORTED}")


def _checkpoint_prefix(source: Path) -> Path | None:
    """The checkpoint prefix a .meta/.index/.data-* file or a bare prefix stands for (None: not a checkpoint)."""
    name = source.name
    for suffix in (".meta", ".index"):
        if name.endswith(suffix):
            return source.with_name(name[: -len(suffix)])
    match = re.fullmatch(r"(.+)\.data-\d+-of-\d+", name)
    if match:
        return source.with_name(match.group(1))
    if source.with_name(name + ".index").is_file():
        return source
    return None


def resolve_checkpoint(source: Path) -> tuple[Path, Path]:
    """(meta graph file, checkpoint prefix) of a checkpoint PATH; a missing graph or index is a ModelError."""
    if source.is_dir():
        prefix = _latest_in(source)
    else:
        prefix = _checkpoint_prefix(source)
        assert prefix is not None
    meta = prefix.with_name(prefix.name + ".meta")
    if not prefix.with_name(prefix.name + ".index").is_file():
        raise ModelError(f"{prefix}.index is missing: {source} is not a complete checkpoint",
                         "copy the whole checkpoint (PREFIX.index, PREFIX.data-*, PREFIX.meta)")
    if not meta.is_file():
        raise ModelError(
            f"{source} is a checkpoint without its graph ({meta.name} is missing): a checkpoint holds weights only",
            "save the model as a SavedModel (tf.saved_model.save(module, DIR)) and run: invoke model.add DIR --name N",
        )
    return meta, prefix


def _latest_in(folder: Path) -> Path:
    state = folder / "checkpoint"
    if state.is_file():  # text proto: model_checkpoint_path: "model.ckpt-1000"
        match = re.search(r'^model_checkpoint_path:\s*"(.+)"', state.read_text(), re.MULTILINE)
        if match:
            named = Path(match.group(1))
            return named if named.is_absolute() else folder / named
    indexes = sorted(folder.glob("*.index"), key=lambda p: p.stat().st_mtime)
    if not indexes:
        raise ModelError(f"{folder} holds no checkpoint (*.index)", f"give {_SUPPORTED}")
    return indexes[-1].with_suffix("")


# --------------------------------------------------------------------------------------------------------------
# Host side: one child process per job


def convert(source: Path, kind: str, target: Path, model: str, *, inputs: str = "", outputs: str = "") -> dict[str, Any]:
    """Write `source` (keras or checkpoint) as a SavedModel at `target`; returns the signature written and, under
    "generated", the smoke sample made in the same child (TensorFlow starts once), for ensure_smoke_sample."""
    if kind == KERAS:
        return _run_child("keras", str(source), str(target), model, what=source)
    meta, prefix = resolve_checkpoint(source)
    return _run_child("checkpoint", str(meta), str(prefix), str(target), inputs, outputs, model, what=source)


def ensure_smoke_sample(version_dir: Path, model: str, generated: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Write the generated smoke sample of a version that ships none (made now unless `generated` is given);
    returns the generation result: {"sample", "signature", "output_key"} or {"skipped": why} (for inputs that
    cannot be made up, such as strings). None: the version had a sample already."""
    path = version_dir / EXTRA_DIR / SMOKE_SAMPLE_FILE
    if path.is_file():
        return None
    result = generated or _run_child("sample", str(version_dir), model, what=version_dir)
    sample = result.get("sample")
    if sample:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(sample, indent=1, sort_keys=True) + "\n")
    return result


def _run_child(job: str, *args: str, what: Path) -> dict[str, Any]:
    result = proc.run([sys.executable, "-m", "tfship.importers", job, *args],
                      env={"TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=IMPORT_TIMEOUT, check=False, error=ModelError)
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            found = json.loads(line[len(RESULT_PREFIX):])
            if "error" in found:
                raise ModelError(f"{what}: {found['error']}", found.get("hint") or f"give {_SUPPORTED}")
            return found
    tail = " | ".join((result.stderr or "").strip().splitlines()[-2:])[-300:]
    raise ModelError(f"importing {what} crashed: {tail or 'no output'}", "check the file loads in TensorFlow itself")


# --------------------------------------------------------------------------------------------------------------
# Child side (imports TensorFlow)


class _Refused(Exception):
    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


def _signature_key(name: str) -> str:
    """A name usable as a signature key: Keras and graph names may hold `/` or `:`."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name.split(":")[0]) or "input"


def _keras_to_saved_model(source: str, target: str, model_name: str) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    try:
        model = keras.models.load_model(source, compile=False)
    except Exception as error:
        raise _Refused(f"does not load as a Keras model ({type(error).__name__}: {_first_line(error)})",
                       "a model with custom layers needs their code: call model.export(DIR) where that code is, "
                       "then: invoke model.add DIR --name N")
    try:
        model_inputs, model_outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError):
        model_inputs = model_outputs = []
    if not model_inputs or not model_outputs:
        raise _Refused("is a Keras model without defined inputs (a subclassed model that was never built)",
                       "build it on an Input, or call model.export(DIR) and add DIR")
    input_names = [_signature_key(t.name) for t in model_inputs]
    output_names = [_signature_key(name) for name in _keras_output_names(model, model_outputs)]
    specs = [tf.TensorSpec(t.shape, t.dtype, name=name) for t, name in zip(model_inputs, input_names)]

    def serve(*args):
        answers = model(list(args) if len(args) > 1 else args[0], training=False)
        answers = answers if isinstance(answers, (list, tuple)) else [answers]
        return dict(zip(output_names, answers))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=specs)
    archive.write_out(target, verbose=False)
    return {"signature": "serving_default", "inputs": input_names, "outputs": output_names,
            "generated": _generate_sample(target, model_name)}


def _keras_output_names(model, outputs) -> list[str]:
    names = getattr(model, "output_names", None)
    if names and len(names) == len(outputs):
        return list(names)
    # Sequential: the layer that produced each output
    return [getattr(getattr(t, "_keras_history", [None])[0], "name", f"output_{i}") for i, t in enumerate(outputs)]


def _checkpoint_to_saved_model(meta: str, prefix: str, target: str, inputs: str, outputs: str,
                               model_name: str) -> dict[str, Any]:
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2

    v1 = tf.compat.v1
    meta_graph = meta_graph_pb2.MetaGraphDef()
    try:
        meta_graph.ParseFromString(Path(meta).read_bytes())
    except Exception as error:
        raise _Refused(f"{meta} is not a MetaGraphDef ({_first_line(error)})", "save the graph with tf.compat.v1.train.Saver")
    with tf.Graph().as_default() as graph, v1.Session(graph=graph) as session:
        try:
            saver = v1.train.import_meta_graph(meta_graph, clear_devices=True)
            saver.restore(session, prefix)
        except Exception as error:
            raise _Refused(f"does not restore ({type(error).__name__}: {_first_line(error)})",
                           "check the .meta and the weights come from the same save")
        signature = _checkpoint_signature(graph, meta_graph, inputs, outputs)
        builder = v1.saved_model.Builder(target)
        tables = graph.get_collection(v1.GraphKeys.TABLE_INITIALIZERS)
        builder.add_meta_graph_and_variables(
            session, ["serve"], signature_def_map={"serving_default": signature},
            main_op=v1.tables_initializer() if tables else None, strip_default_attrs=True)
        builder.save()
    return {"signature": "serving_default", "inputs": sorted(signature.inputs), "outputs": sorted(signature.outputs),
            "generated": _generate_sample(target, model_name)}


def _checkpoint_signature(graph, meta_graph, inputs: str, outputs: str):
    import tensorflow as tf

    v1 = tf.compat.v1

    def tensors(names: str, what: str) -> dict[str, Any]:
        found = {}
        for name in (n.strip() for n in names.split(",") if n.strip()):
            try:
                tensor = graph.get_tensor_by_name(name if ":" in name else name + ":0")
            except (KeyError, ValueError):
                raise _Refused(f"its graph has no tensor {name!r} (given with --{what})",
                               "list tensor names with: [n.name for n in tf.compat.v1.train.import_meta_graph(META)"
                               ".graph.get_operations()]")
            found[_signature_key(tensor.name)] = tensor
        return found

    if inputs or outputs:
        if not (inputs and outputs):
            raise _Refused("--inputs and --outputs must be given together", "give both, e.g. --inputs x:0 --outputs y:0")
        return v1.saved_model.predict_signature_def(tensors(inputs, "inputs"), tensors(outputs, "outputs"))
    if "serving_default" in meta_graph.signature_def:
        return meta_graph.signature_def["serving_default"]
    ins = {_signature_key(t.name): t for t in graph.get_collection("inputs")}
    outs = {_signature_key(t.name): t for t in graph.get_collection("outputs")}
    if ins and outs:
        return v1.saved_model.predict_signature_def(ins, outs)
    raise _Refused("its graph names no serving inputs and outputs",
                   "give them: invoke model.add PATH --name N --inputs x:0 --outputs y:0 (tensor names in the graph)")


def _generate_sample(version_dir: str, model: str) -> dict[str, Any]:
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(version_dir)
    names = [name for name in loaded.signatures.keys() if not name.startswith("__")]
    if not names:
        return {"skipped": "the model has no signatures"}
    signature_name = "serving_default" if "serving_default" in names else sorted(names)[0]
    function = loaded.signatures[signature_name]
    specs = function.structured_input_signature[1]
    rng = np.random.default_rng(GENERATED_SEED)
    feeds: dict[str, Any] = {}
    for key, spec in sorted(specs.items()):
        dtype = spec.dtype
        if not (dtype.is_floating or dtype.is_integer or dtype.is_bool):
            return {"skipped": f"input {key} is {dtype.name}, which tfship cannot make up"}
        dims = spec.shape.as_list() if spec.shape.rank is not None else [None, UNKNOWN_DIM]
        shape = [(GENERATED_ROWS if i == 0 else UNKNOWN_DIM) if d is None else d for i, d in enumerate(dims)]
        if dtype.is_floating:
            values = np.round(rng.uniform(0.0, 1.0, shape), 3)
        elif dtype.is_bool:
            values = rng.random(shape) < 0.5
        else:
            values = rng.integers(0, 2, shape)  # 0 and 1 are valid for one-hot, embedding and class inputs
        feeds[key] = np.asarray(values, dtype=dtype.as_numpy_dtype)
    try:
        answers = function(**{key: tf.constant(value) for key, value in feeds.items()})
    except Exception as error:
        return {"skipped": f"the model fails on generated inputs ({type(error).__name__}: {_first_line(error)})"}
    numeric = sorted(k for k, v in answers.items() if v.dtype.is_floating or v.dtype.is_integer)
    if not numeric:
        return {"skipped": "no output is numeric"}
    output_key = numeric[0]
    sample: dict[str, Any] = {
        "model": model,
        "generated": True,
        "seed": GENERATED_SEED,
        "signature": signature_name,
        "output_key": output_key,
        "expected_outputs": answers[output_key].numpy().tolist(),
        "tolerance": {"atol": GENERATED_ATOL, "rtol": GENERATED_RTOL},
        "input_dtypes": {key: value.dtype.name for key, value in feeds.items()},
    }
    rows = {key: _json_rows(value) for key, value in feeds.items()}
    if len(rows) == 1:
        (key, value), = rows.items()
        sample.update(input_key=key, inputs=value)
    else:
        sample.update(input_key="", inputs=rows)
    return {"sample": sample, "signature": signature_name, "output_key": output_key}


def _json_rows(values) -> list:
    """Short decimals for float inputs: 0.637 parses back to the very float32 that was sent to the model."""
    import numpy as np

    if values.dtype.kind == "f":
        return np.round(values.astype(np.float64), 6).tolist()
    return values.tolist()


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0][:200]


_JOBS = {"keras": _keras_to_saved_model, "checkpoint": _checkpoint_to_saved_model, "sample": _generate_sample}


def main(argv: list[str]) -> int:
    job, *args = argv
    try:
        result = _JOBS[job](*args)
    except _Refused as refused:
        result = {"error": str(refused), "hint": refused.hint}
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
