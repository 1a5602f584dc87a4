"""tfship.web without a server: which signatures classify images, image conversion, settings from flags and env."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from tfship.errors import ConfigError
from tfship.server.replica import REPLICA_METADATA_KEY, ReplicaInterceptor
from tfship.web import imaging
from tfship.web.settings import service_target, settings_from
from tfship.web.model_client import CLASSIFY_METHOD, PREDICT_METHOD, Classifier, ImageInput, Unusable, WebError, describe


def signature(method: str, inputs: dict, outputs: dict) -> meta_graph_pb2.SignatureDef:
    sig = meta_graph_pb2.SignatureDef(method_name=method)
    for target, tensors in ((sig.inputs, inputs), (sig.outputs, outputs)):
        for alias, (dtype, shape) in tensors.items():
            target[alias].dtype = dtype
            for size in shape:
                target[alias].tensor_shape.dim.add(size=size)
    return sig


FLOAT, STRING = types_pb2.DT_FLOAT, types_pb2.DT_STRING


def test_digits_signatures_classify_through_the_classify_api():
    model = describe("digits", 1, {
        "serving_default": signature(PREDICT_METHOD, {"pixels": (FLOAT, [-1, 64])}, {"probabilities": (FLOAT, [-1, 10])}),
        "classify": signature(CLASSIFY_METHOD, {"inputs": (STRING, [-1])},
                              {"classes": (STRING, [-1, 10]), "scores": (FLOAT, [-1, 10])}),
    }, {})
    assert model == Classifier("digits", 1, ImageInput(8, 8, 1, (64,), 16.0), "classify", "classify", "pixels")


def test_a_predict_only_mnist_shape_classifies_through_predict_scaled_0_to_1():
    model = describe("mnist", 3, {
        "serving_default": signature(PREDICT_METHOD, {"image": (FLOAT, [-1, 28, 28, 1])}, {"logits": (FLOAT, [-1, 10])}),
    }, {})
    assert model == Classifier("mnist", 3, ImageInput(28, 28, 1, (28, 28, 1), 1.0), "predict", "serving_default",
                               "image", "logits")
    assert describe("mnist", 3, {"serving_default": signature(
        PREDICT_METHOD, {"image": (FLOAT, [-1, 784])}, {"p": (FLOAT, [-1, 10])})}, {"mnist": 255.0}).image.pixel_max == 255


@pytest.mark.parametrize("inputs, outputs, reason", [
    ({"x": (FLOAT, [-1, 1])}, {"y": (FLOAT, [-1, 1])}, "not an image"),  # half_plus_two
    ({"x": (FLOAT, [-1, 65])}, {"y": (FLOAT, [-1, 10])}, "not an image"),  # not a square
    ({"x": (STRING, [-1])}, {"y": (FLOAT, [-1, 10])}, "not a float tensor"),
    ({"x": (FLOAT, [-1, 64])}, {"y": (FLOAT, [-1, 1])}, "no single [batch, classes] score output"),
    ({"a": (FLOAT, [-1, 64]), "b": (FLOAT, [-1, 64])}, {"y": (FLOAT, [-1, 10])}, "takes 2 inputs"),
])
def test_models_that_do_not_classify_images_say_why(inputs, outputs, reason):
    model = describe("m", 1, {"serving_default": signature(PREDICT_METHOD, inputs, outputs)}, {})
    assert isinstance(model, Unusable) and reason in model.reason


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_dark_ink_on_white_becomes_light_ink_on_black_filling_the_height():
    paper = Image.new("L", (300, 200), 255)
    paper.paste(0, (140, 20, 160, 180))  # a black bar: a "1"
    values = imaging.to_model_input(imaging.decode(png(paper)), ImageInput(8, 8, 1, (64,), 16.0))
    rows = [values[row * 8:(row + 1) * 8] for row in range(8)]
    assert all(max(row) > 8 for row in rows)  # fills the height
    assert all(row[0] == 0 and row[7] == 0 for row in rows)  # centred, background 0
    assert max(values) <= 16


@pytest.mark.parametrize("data, status, words", [
    (b"", 400, "is empty"),
    (b"GIF89a but not really", 415, "not an image"),
    (png(Image.effect_noise((64, 64), 64).convert("L"))[:2000], 422, "damaged"),
])
def test_bad_bytes_are_web_errors_with_a_4xx(data, status, words):
    with pytest.raises(WebError) as caught:
        imaging.decode(data, "f.png")
    assert caught.value.status == status and words in caught.value.message


def test_a_decompression_bomb_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(imaging, "MAX_PIXELS", 100)
    with pytest.raises(WebError) as caught:
        imaging.decode(png(Image.new("L", (20, 20), 0)), "bomb.png")
    assert caught.value.status == 413


def test_a_blank_image_is_refused():
    with pytest.raises(WebError, match="blank"):
        imaging.to_model_input(Image.new("RGB", (50, 50), "white"), ImageInput(8, 8, 1, (64,), 16.0))


def test_the_model_server_comes_from_the_flag_else_env_else_the_service_variables():
    env = {"TFSHIP_SERVING_SERVICE_HOST": "10.0.0.7", "TFSHIP_SERVING_SERVICE_PORT_GRPC": "8500",
           "TFSHIP_WEB_MODELS": "digits"}
    assert service_target("tfship-serving", env) == "10.0.0.7:8500"
    assert settings_from([], env)[0].model_server == "10.0.0.7:8500"
    assert settings_from([], {**env, "TFSHIP_WEB_MODEL_SERVER": "a:1"})[0].model_server == "a:1"
    assert settings_from(["--model-server=b:2", "--models=x,y"], env)[0].models == ("x", "y")
    with pytest.raises(ConfigError, match="no model server"):
        settings_from([], {"TFSHIP_WEB_MODELS": "digits"})
    with pytest.raises(ConfigError, match="no model names"):
        settings_from(["--model-server=b:2"], {})
    with pytest.raises(ConfigError, match="NAME=NUMBER"):
        settings_from(["--model-server=b:2", "--models=d", "--pixel-max=d"], {})


def test_the_replica_interceptor_names_the_host_in_trailing_metadata():
    import grpc

    class Context:
        trailing = None

        def set_trailing_metadata(self, metadata):
            self.trailing = metadata

    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request + 1)
    tagged = ReplicaInterceptor("pod-a").intercept_service(lambda details: handler, None)
    context = Context()
    assert tagged.unary_unary(41, context) == 42
    assert context.trailing == ((REPLICA_METADATA_KEY, "pod-a"),)
