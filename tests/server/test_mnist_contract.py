"""The mnist exporter keeps TF Serving's MNIST tutorial contract, checked against the real tfship.server.

Requests are built exactly as tensorflow_serving/example/mnist_client.py builds them: a PredictRequest for model
`mnist`, signature `predict_images`, inputs['images'] = tf.make_tensor_proto(image[0], shape=[1, image[0].size]),
the answer read from outputs['scores'].float_val and its argmax compared with the label.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, predict_pb2,
                                     prediction_service_pb2_grpc)
from model_fixtures import export_models

from tfship import clients, render, service
from tfship.config import Config, ModelSpec
from tfship.exporters import mnist

NUM_TESTS = 100


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Config:
    config = Config(root=tmp_path_factory.mktemp("project"),
                    models=[ModelSpec(name="mnist", exporter="mnist", signatures=["serving_default", "predict_images"])])
    [result] = export_models(config)
    assert result.summary["accuracy"] >= mnist.MIN_ACCURACY
    return config


@pytest.fixture(scope="module")
def stub(exported, tmp_path_factory):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from server_harness import ServerProcess

    folder = tmp_path_factory.mktemp("server")
    (folder / "monitoring.config").write_text(render.PROMETHEUS_MONITORING_CONFIG)
    server = ServerProcess(["--model_name=mnist", f"--model_base_path={exported.models_path / 'mnist'}",
                            f"--monitoring_config_file={folder / 'monitoring.config'}"],
                           folder / "server.log").wait_ready()
    channel = grpc.insecure_channel(server.grpc_address)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    stub.server = server
    yield stub
    channel.close()
    server.stop()


def test_predict_images_as_mnist_client_sends_it(stub):
    images, labels = mnist.held_out(0)
    errors = 0
    for index in range(NUM_TESTS):
        image, label = images[index:index + 1], labels[index:index + 1]  # test_data_set.next_batch(1)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mnist"
        request.model_spec.signature_name = "predict_images"
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(image[0], shape=[1, image[0].size]))
        response = stub.Predict.future(request, 5.0).result()
        scores = np.array(response.outputs["scores"].float_val)
        assert scores.shape == (10,) and abs(scores.sum() - 1.0) < 1e-4
        errors += int(np.argmax(scores) != label[0])
    assert errors / NUM_TESTS <= 1 - mnist.MIN_ACCURACY, f"inference error rate {errors / NUM_TESTS:.2%}"


def test_serving_default_classifies_tf_examples_best_first(stub):
    images, labels = mnist.held_out(0)
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "mnist"  # no signature_name: serving_default, as the tutorial's classify
    for image in images[:20]:
        request.input.example_list.examples.add().features.feature["x"].float_list.value.extend(image.tolist())
    result = stub.Classify(request, 10.0).result
    firsts = [int(c.classes[0].label) for c in result.classifications]
    for classification in result.classifications:
        scores = [c.score for c in classification.classes]
        assert len(scores) == 10 and scores == sorted(scores, reverse=True)
        assert sorted(c.label for c in classification.classes) == mnist.LABELS
    assert np.mean(np.array(firsts) != labels[:20]) <= 1 - mnist.MIN_ACCURACY


def test_metadata_matches_mnist_saved_model(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "mnist"
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    stub.GetModelMetadata(request, 10.0).metadata["signature_def"].Unpack(signature_map)
    signatures = signature_map.signature_def
    assert signatures["predict_images"].method_name == "tensorflow/serving/predict"
    assert signatures["serving_default"].method_name == "tensorflow/serving/classify"
    images = signatures["predict_images"].inputs["images"]
    assert [d.size for d in images.tensor_shape.dim] == [-1, 784] and images.dtype == tf.float32.as_datatype_enum
    scores = signatures["predict_images"].outputs["scores"]
    assert [d.size for d in scores.tensor_shape.dim] == [-1, 10]
    assert set(signatures["serving_default"].inputs) == {"inputs"}
    assert set(signatures["serving_default"].outputs) == {"classes", "scores"}


def test_to_mnist_fits_the_ink_into_20_by_20_centred():
    square = np.zeros((8, 8))
    square[2:6, 3:5] = 16.0  # 4 tall, 2 wide
    image = mnist.to_mnist(square).reshape(28, 28)
    rows = np.flatnonzero(image.any(axis=1))
    cols = np.flatnonzero(image.any(axis=0))
    assert (rows[0], rows[-1]) == (4, 23) and (cols[0], cols[-1]) == (9, 18)
    assert image.max() == pytest.approx(1.0) and image.min() == 0.0


# The clients' own parts against the same server (the cluster-facing parts are in tests/e2e/test_clients.py)


def metrics_count(server) -> int:
    import requests

    text = requests.get(server.rest_url + render.PROMETHEUS_PATH, timeout=10).text
    return service.request_count(text, "mnist")


def test_evaluate_client_reports_the_error_rate_and_the_server_counts_every_request(stub):
    images, labels = mnist.held_out(0)
    before = metrics_count(stub.server)
    report = clients.run_evaluation(stub.server.grpc_address, "mnist", "predict_images", "images", "scores",
                                    images, labels, num_tests=400, concurrency=4)
    assert (report.failed, report.images, len(report.latencies_ms)) == (0, 360, 400)
    assert report.error_rate <= 1 - mnist.MIN_ACCURACY
    lines = report.lines("mnist", "predict_images")
    assert lines[1] == f"Inference error rate: {report.error_rate * 100:.1f}%"
    assert lines[0].endswith("concurrency 4 (the 360 held-out images, cycled)")
    assert metrics_count(stub.server) - before == 400


def digit_png(path, image8x8, size: int) -> str:
    """A held-out 8x8 digit drawn the way a person would: dark ink on white, RGB, much larger than 28x28."""
    from PIL import Image

    ink = (np.asarray(image8x8) / 16.0 * 255).astype(np.uint8)
    picture = Image.fromarray(255 - ink).resize((size, size), Image.Resampling.BICUBIC).convert("RGB")
    canvas = Image.new("RGB", (size + 40, size + 60), "white")  # off-centre margins
    canvas.paste(picture, (10, 35))
    canvas.save(path)
    return str(path)


def test_digit_png_files_become_mnist_inputs_the_model_classifies(stub, exported, tmp_path):
    from sklearn.datasets import load_digits

    spec = clients.model_input(exported, "mnist")
    assert (spec.signature, spec.input_key, spec.output_key, spec.width, spec.pixel_max, spec.classifier) == (
        "predict_images", "images", "scores", 784, 1.0, True)
    digits = load_digits()
    _, test_index = mnist.split_indices(0)
    wrong = 0
    for number, index in enumerate(test_index[:20]):
        [row] = clients.image_rows(digit_png(tmp_path / f"{number}.png", digits.images[index], 96 + 8 * number), spec)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mnist"
        request.model_spec.signature_name = "predict_images"
        request.inputs["images"].CopyFrom(tf.make_tensor_proto([row], dtype=tf.float32))
        scores = np.array(stub.Predict(request, 10.0).outputs["scores"].float_val)
        answer = clients.format_answer({"scores": [scores.tolist()]}, spec)
        assert answer.startswith(f"class {int(np.argmax(scores))} (top 3: ")
        wrong += int(np.argmax(scores)) != digits.target[index]
    assert wrong <= 2, f"{wrong} of 20 digit images misread"
