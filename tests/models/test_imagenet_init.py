"""ImageNet init from keras.applications weight files (written locally, never downloaded)."""

import h5py
import keras
import numpy as np
import pytest

import tfdaseg.models
from tests.helpers import models as model_helpers
from tfdaseg.models import imagenet_init
from tfdaseg.models.imagenet_init import load_imagenet_weights


def _randomise(model: keras.Model, seed: int) -> None:
  """Random biases and BatchNorm statistics, so that bias folding and epsilon matter."""
  model_helpers.randomise_batch_norm(model, seed, min_variance=1e-4, conv_biases=True)


def _output(model: keras.Model, layer: str, x: np.ndarray) -> np.ndarray:
  probe = keras.Model(model.inputs, model.get_layer(layer).output)
  return keras.ops.convert_to_numpy(probe(x, training=False))


def test_resnet101_init_reproduces_the_keras_stem_and_layer1(tmp_path):
  source = keras.applications.ResNet101(weights=None, include_top=False)
  _randomise(source, seed=0)
  path = str(tmp_path / "resnet101_notop.weights.h5")
  source.save_weights(path)

  generator = tfdaseg.models.build("deeplab_v2_resnet101_multi", num_classes=19)
  report = load_imagenet_weights(generator, path, "deeplab_v2_resnet101_multi")
  assert report.left_at_init == ["aux_head", "main_head"]
  assert report.unused == []
  assert len(report.loaded) == 2 + 33 * 6 + 4 * 2  # stem, bottleneck convs + BNs, shortcuts

  # Stem and layer1 have no stride or dilation difference between the two ResNet styles; with an
  # odd-size stem output the floor (Keras) and ceil (ours) max pools also agree.
  x = np.random.default_rng(1).normal(0, 50, (1, 65, 65, 3)).astype("float32")
  model_helpers.assert_outputs_close(_output(generator, "layer1_2_relu", x),
                                     _output(source, "conv2_block3_out", x), rtol=1e-5)


@pytest.mark.parametrize("file_format", ["keras3", "legacy"])
def test_vgg16_init_loads_the_convs_and_leaves_fc6_fc7_and_head(tmp_path, file_format):
  source = keras.applications.VGG16(weights=None, include_top=False)
  _randomise(source, seed=2)
  # A Keras 3 .weights.h5 names layers by class ("conv2d_3"); a legacy .h5 by layer name.
  if file_format == "keras3":
    path = str(tmp_path / "vgg16_notop.weights.h5")
    source.save_weights(path)
  else:
    path = str(tmp_path / "vgg16_notop.h5")
    source.save(path)

  generator = tfdaseg.models.build("deeplab_v2_vgg16", num_classes=19)
  fc6_before = generator.get_layer("fc6").kernel.numpy().copy()
  report = load_imagenet_weights(generator, path, "deeplab_v2_vgg16")
  assert len(report.loaded) == 13
  assert report.left_at_init == ["fc6", "fc7", "main_head"]
  assert report.unused == []
  np.testing.assert_array_equal(generator.get_layer("fc6").kernel.numpy(), fc6_before)
  x = np.random.default_rng(3).normal(0, 50, (1, 40, 48, 3)).astype("float32")
  model_helpers.assert_outputs_close(_output(generator, "block4_conv3_relu", x),
                                     _output(source, "block4_conv3", x), rtol=1e-5)


def _write_layer_index(path, file_format: str, names: list) -> None:
  """An h5 file with only the layer index of a keras weights file (no weights)."""
  with h5py.File(path, "w") as f:
    if file_format == "legacy":
      f.attrs["layer_names"] = [n.encode() for n in names]
    else:
      for name in names:
        f.create_group(f"layers/{name}/vars")


@pytest.mark.parametrize("file_format,names,expected", [
    ("legacy", ["block5_conv3", "block5_pool", "flatten", "fc1", "fc2", "predictions"], True),
    ("legacy", ["block5_conv3", "block5_pool"], False),
    ("keras3", ["conv2d_12", "dense", "dense_1", "dense_2"], True),
    ("keras3", ["conv2d_12", "max_pooling2d_4"], False),
])
def test_detects_files_with_the_imagenet_classifier(tmp_path, file_format, names, expected):
  path = str(tmp_path / "index.h5")
  _write_layer_index(path, file_format, names)
  assert imagenet_init.has_top(path) is expected


def test_tiny_generator_does_not_fit_imagenet_weights(tmp_path):
  path = str(tmp_path / "vgg16_notop.weights.h5")
  keras.applications.VGG16(weights=None, include_top=False).save_weights(path)
  generator = tfdaseg.models.build("deeplab_v2_vgg16", num_classes=3, base_width=4)
  with pytest.raises(ValueError, match=r"vgg16_notop\.weights\.h5: does not fit deeplab_v2_vgg16"):
    load_imagenet_weights(generator, path, "deeplab_v2_vgg16")


def test_unknown_architecture_lists_the_known_ones(tmp_path):
  with pytest.raises(KeyError, match="deeplab_v2_vgg16"):
    load_imagenet_weights(None, str(tmp_path / "x.h5"), "deeplab_v3")
