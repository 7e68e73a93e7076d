"""Tiny model factories and model checks shared by tests of every area."""

import json
import os

import keras
import numpy as np

import tfdaseg.models

# A MiT small enough for unit tests: the depth-2 stage chains two blocks.
TINY_MIT = {"embed_dims": (4, 8, 12, 16), "num_heads": (1, 2, 3, 4), "depths": (1, 2, 1, 1)}
# Options that make each generator tiny enough for unit tests (a few thousand weights). The
# MiT variants differ only in their encoder sizes, which the tiny options replace: b0 stands
# for all.
TINY_GENERATOR_OPTIONS = {
    "deeplab_v2_resnet101_multi": {"blocks": (1, 1, 1, 1), "base_width": 4},
    "deeplab_v2_resnet101_single": {"blocks": (1, 1, 1, 1), "base_width": 4},
    "deeplab_v2_vgg16": {"base_width": 4},
    "daformer_mit_b0": {"encoder_options": TINY_MIT, "embed_dim": 8},
    "segformer_mit_b0": {"encoder_options": TINY_MIT, "embed_dim": 8},
}


def tiny_generator(name: str = "deeplab_v2_resnet101_multi", num_classes: int = 3,
                   **options) -> keras.Model:
  """Builds a tiny from-scratch generator (trainable BatchNorm unless `bn_mode` is given).

  Args:
    name: A registered generator name.
    num_classes: Classes to predict.
    **options: Overrides of `TINY_GENERATOR_OPTIONS[name]` and the defaults.

  Returns:
    The generator.
  """
  kwargs = {"num_classes": num_classes, "bn_mode": "train", **TINY_GENERATOR_OPTIONS[name],
            **options}
  return tfdaseg.models.build(name, **kwargs)


def randomise_batch_norm(model: keras.Model, seed: int = 0, min_variance: float = 0.5,
                         conv_biases: bool = False) -> None:
  """Gives every BatchNorm random affine parameters and moving statistics, so that inference-mode
  BatchNorm is not the identity and tests that compare paths can tell them apart.

  Args:
    model: The model whose layers are changed in place.
    seed: Seed of the draws.
    min_variance: Lower bound of the moving variances (upper bound 1.5); a tiny one makes
      BatchNorm's epsilon matter.
    conv_biases: Also draw the biases of convolutions that have one.
  """
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      size = layer.gamma.shape[0]
      layer.gamma.assign(rng.uniform(0.5, 1.5, size).astype("float32"))
      layer.beta.assign(rng.normal(0.0, 0.1, size).astype("float32"))
      layer.moving_mean.assign(rng.normal(0.0, 0.1, size).astype("float32"))
      layer.moving_variance.assign(rng.uniform(min_variance, 1.5, size).astype("float32"))
    elif conv_biases and isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
      layer.bias.assign(rng.normal(0.0, 0.1, layer.bias.shape).astype("float32"))


def random_image(height: int, width: int, batch: int = 1, seed: int = 0) -> np.ndarray:
  """A float32 [batch, height, width, 3] array on the scale of Caffe-preprocessed images."""
  return np.random.default_rng(seed).normal(0.0, 50.0, (batch, height, width, 3)).astype("float32")


def assert_outputs_close(actual, expected, rtol: float = 1e-5) -> None:
  """Asserts two model outputs (arrays or dicts of arrays) agree to `rtol` of the largest
  expected magnitude."""
  if isinstance(expected, dict):
    assert sorted(actual) == sorted(expected)
    for key in expected:
      assert_outputs_close(actual[key], expected[key], rtol)
    return
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  assert actual.shape == expected.shape
  scale = max(np.max(np.abs(expected)), 1e-12)
  error = np.max(np.abs(actual - expected)) / scale
  assert error <= rtol, f"relative error {error:.3g} > {rtol:.3g}"


def assert_keras_round_trip(model: keras.Model, inputs: np.ndarray, directory: str) -> keras.Model:
  """Saves `model` as .keras, loads it back (custom layers resolved via `import tfdaseg`) and
  checks the loaded model computes the same outputs.

  Args:
    model: The model to save.
    inputs: A batch to compare outputs on.
    directory: A temporary folder.

  Returns:
    The loaded model.
  """
  path = os.path.join(directory, f"{model.name}.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  # Through JSON, because a loaded config has lists where the original has tuples.
  assert json.loads(json.dumps(loaded.get_config())) == json.loads(json.dumps(model.get_config()))
  assert_outputs_close(loaded(inputs, training=False), model(inputs, training=False), rtol=1e-6)
  return loaded


TORCH_PARITY_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures", "torch_parity")


def torch_parity_manifest() -> dict:
  """The manifest of tests/fixtures/torch_parity (tools/make_torch_parity_fixtures.py)."""
  with open(os.path.join(TORCH_PARITY_DIR, "manifest.json")) as f:
    return json.load(f)


def torch_parity_path(name: str) -> str:
  """Path of a file in tests/fixtures/torch_parity."""
  return os.path.join(TORCH_PARITY_DIR, name)
