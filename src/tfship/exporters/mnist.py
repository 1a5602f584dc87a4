"""mnist: TF Serving's MNIST tutorial contract (example/mnist_saved_model.py), learnt from scikit-learn's digits.

MNIST itself cannot be downloaded here, so the bundled 8×8 digits (1797 images) are made MNIST-like by `to_mnist`:
the ink's bounding box fitted into 20×20 (aspect kept), centred in a 28×28 frame, intensities scaled to [0, 1],
flattened to 784 floats, the layout mnist_client.py sends. A 784-128-10 perceptron is trained full-batch with Adam
on 80 % (stratified split by seed); the held-out 20 % (`held_out`) gives the accuracy printed at export and the
images `invoke evaluate` sends. Signatures, as mnist_saved_model.py writes them:
  predict_images   predict   images [-1, 784] float  -> scores [-1, 10] (softmax, index = digit)
  serving_default  classify  inputs: serialized tf.Example with feature `x` (784 floats)
                             -> classes [-1, 10] ("0".."9", best first), scores [-1, 10] (best first)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tfship.exporters.common import (CLASSIFY, PREDICT, check_accuracy, glorot, seed_everything, set_method_names,
                                     train_classifier, write_smoke_sample, write_warmup_requests)

SIDE = 28
BOX = 20  # MNIST fits each digit into 20×20 and centres it in 28×28
PIXELS = SIDE * SIDE
FEATURE = "x"
LABELS = [str(digit) for digit in range(10)]
MIN_ACCURACY = 0.95
HIDDEN_UNITS = 128
TRAIN_STEPS = 300
LEARNING_RATE = 0.005
HELD_OUT_FRACTION = 0.2
SMOKE_SAMPLE_SIZE = 50
WARMUP_ROWS = 4
INK_THRESHOLD = 0.1


def to_mnist(gray) -> Any:
    """One grayscale image (2-D array, ink bright, any scale) as MNIST's 784 floats in [0, 1]. NumPy only, so the
    exporter and the clients (inside the devel image too) prepare images the same way."""
    import numpy as np

    image = np.asarray(gray, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
    peak = image.max()
    canvas = np.zeros((SIDE, SIDE))
    if peak <= 0:
        return canvas.reshape(-1).astype(np.float32)
    image = image / peak
    rows = np.flatnonzero((image > INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((image > INK_THRESHOLD).any(axis=0))
    image = image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    scale = BOX / max(image.shape)
    height, width = (max(1, round(n * scale)) for n in image.shape)
    top, left = (SIDE - height) // 2, (SIDE - width) // 2
    canvas[top:top + height, left:left + width] = _resize(image, height, width)
    return np.clip(canvas, 0.0, 1.0).reshape(-1).astype(np.float32)


def _resize(image, height: int, width: int):
    """Bilinear resize by separable linear interpolation (pixel centres aligned)."""
    import numpy as np

    def axis_positions(source: int, target: int):
        return np.clip((np.arange(target) + 0.5) * source / target - 0.5, 0, source - 1)

    ys, xs = axis_positions(image.shape[0], height), axis_positions(image.shape[1], width)
    across = np.stack([np.interp(xs, np.arange(image.shape[1]), row) for row in image])
    return np.stack([np.interp(ys, np.arange(image.shape[0]), column) for column in across.T]).T


def split_indices(seed: int):
    """(train, held-out) indices into scikit-learn's digits, stratified, by seed."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    target = load_digits().target
    return train_test_split(np.arange(len(target)), test_size=HELD_OUT_FRACTION, stratify=target, random_state=seed)


def data(seed: int):
    """(x_train, x_test, y_train, y_test): the digits as MNIST-like 784-float rows, split by seed."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.stack([to_mnist(image) for image in digits.images])
    labels = digits.target.astype(np.int64)
    train, test = split_indices(seed)
    return images[train], images[test], labels[train], labels[test]


def held_out(seed: int = 0):
    """The images and labels the exported model never saw (what `invoke evaluate` sends)."""
    _, x_test, _, y_test = data(seed)
    return x_test, y_test


def export(export_dir: Path, *, seed: int = 0, log=print) -> dict[str, Any]:
    """Train, check the held-out accuracy, and write the SavedModel into export_dir (which must not exist yet)."""
    import numpy as np
    import tensorflow as tf

    seed_everything(seed)
    x_train, x_test, y_train, y_test = data(seed)
    module = _build_module(tf, seed)
    train_classifier(tf, module.logits, [module.w1, module.b1, module.w2, module.b2], x_train, y_train,
                     steps=TRAIN_STEPS, learning_rate=LEARNING_RATE, log=log, name="mnist")

    predicted = np.argmax(module.predict_images(tf.constant(x_test))["scores"].numpy(), axis=1)
    accuracy = float(np.mean(predicted == y_test))
    check_accuracy("mnist", accuracy, len(y_test), seed, MIN_ACCURACY, log)

    signatures = {"predict_images": module.predict_images, "serving_default": module.classify}
    tf.saved_model.save(module, str(export_dir), signatures=signatures)
    set_method_names(export_dir, {"predict_images": PREDICT, "serving_default": CLASSIFY})
    write_smoke_sample(
        export_dir,
        {
            "model": "mnist",
            "seed": seed,
            "held_out_accuracy": accuracy,
            "signature": "predict_images",
            "input_key": "images",
            "output_key": "scores",
            "example_feature": FEATURE,
            "classify_signature": "serving_default",
            "pixel_max": 1.0,
            "image_shape": [SIDE, SIDE],
            "inputs": np.round(x_test[:SMOKE_SAMPLE_SIZE].astype(np.float64), 3).tolist(),
            "expected_labels": [LABELS[label] for label in y_test[:SMOKE_SAMPLE_SIZE]],
        },
    )
    warmup_rows = x_test[:WARMUP_ROWS].tolist()  # replayed by the server at load
    write_warmup_requests(export_dir, predict={"predict_images": {"images": warmup_rows}},
                          classify={"serving_default": [{FEATURE: row} for row in warmup_rows]})
    return {"accuracy": accuracy, "held_out": int(len(y_test)), "signatures": sorted(signatures)}


def _build_module(tf, seed: int):
    features = {FEATURE: tf.io.FixedLenFeature([PIXELS], dtype=tf.float32)}

    class Mnist(tf.Module):
        def __init__(self):
            super().__init__(name="mnist")
            self.w1 = tf.Variable(glorot(tf, [PIXELS, HIDDEN_UNITS], seed, 1), name="w1")
            self.b1 = tf.Variable(tf.zeros([HIDDEN_UNITS]), name="b1")
            self.w2 = tf.Variable(glorot(tf, [HIDDEN_UNITS, 10], seed, 2), name="w2")
            self.b2 = tf.Variable(tf.zeros([10]), name="b2")
            self.labels = tf.constant(LABELS)

        def logits(self, images):
            hidden = tf.nn.relu(tf.matmul(images, self.w1) + self.b1)
            return tf.matmul(hidden, self.w2) + self.b2

        @tf.function(input_signature=[tf.TensorSpec([None, PIXELS], tf.float32, name="images")])
        def predict_images(self, images):
            return {"scores": tf.nn.softmax(self.logits(images))}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            images = tf.io.parse_example(inputs, features)[FEATURE]
            # As mnist_saved_model.py: top_k over all 10 classes, so classes and scores come best first.
            scores, indices = tf.nn.top_k(tf.nn.softmax(self.logits(images)), k=10)
            return {"classes": tf.gather(self.labels, indices), "scores": scores}

    return Mnist()
