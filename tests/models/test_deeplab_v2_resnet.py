"""DeepLab-v2 ResNet generators: shapes, head variables, saving, precision (BatchNorm modes:
test_batch_norm.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdaseg.models
from tests.helpers import models as model_helpers


def torch_output_size(n: int) -> int:
  """Spatial size of the reference's stride-8 output, from PyTorch's conv/pool size formulas."""
  n = (n + 2 * 3 - 7) // 2 + 1  # conv1 7x7/2 pad 3
  n = -(-(n + 2 * 1 - 3) // 2) + 1  # maxpool 3x3/2 pad 1, ceil_mode
  return (n - 1) // 2 + 1  # layer2's first 1x1 conv, stride 2


@pytest.mark.parametrize("height,width", [(65, 65), (40, 57)])
def test_multi_level_outputs(height, width):
  model = model_helpers.tiny_generator("deeplab_v2_resnet101_multi", num_classes=5)
  out = model(model_helpers.random_image(height, width, batch=2), training=False)
  size = (2, torch_output_size(height), torch_output_size(width))
  assert sorted(out) == ["aux_features", "aux_logits", "features", "logits"]
  assert tuple(out["logits"].shape) == size + (5,)
  assert tuple(out["aux_logits"].shape) == size + (5,)
  assert tuple(out["features"].shape) == size + (128,)  # 32 * base_width (4)
  assert tuple(out["aux_features"].shape) == size + (64,)


def test_single_level_has_no_aux_head():
  model = model_helpers.tiny_generator("deeplab_v2_resnet101_single", num_classes=4)
  out = model(model_helpers.random_image(33, 33), training=False)
  assert sorted(out) == ["aux_features", "features", "logits"]
  assert [layer.name for layer in model.layers
          if isinstance(layer, tfdaseg.models.AsppClassifier)] == ["main_head"]


def test_resnet101_depth_and_width():
  model = tfdaseg.models.build("deeplab_v2_resnet101_multi", num_classes=19)
  convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
  # 1 stem conv + 33 bottlenecks x 3 convs + 4 projection shortcuts.
  assert len(convs) == 1 + 3 * (3 + 4 + 23 + 3) + 4
  assert model.get_layer("layer4_2_conv3").kernel.shape == (1, 1, 512, 2048)
  assert model.get_layer("layer3_0_conv2").dilation_rate == (2, 2)
  assert model.get_layer("layer4_0_conv2").dilation_rate == (4, 4)
  # The stride sits on the first 1x1 conv (Caffe style), not on the 3x3.
  assert model.get_layer("layer2_0_conv1").strides == (2, 2)
  assert model.get_layer("layer2_0_conv2").strides == (1, 1)


def test_split_head_variables_partitions_trainable_variables():
  model = model_helpers.tiny_generator(bn_mode="frozen", aspp_compat="adaptsegnet")
  backbone, head = tfdaseg.models.split_head_variables(model)
  assert {id(v) for v in backbone}.isdisjoint(id(v) for v in head)
  assert len(backbone) + len(head) == len(model.trainable_variables)
  # Two heads x two summed branches x (kernel, bias).
  assert len(head) == 8
  assert all("head" in v.path for v in head)
  assert not any("head" in v.path for v in backbone)


def test_split_head_variables_needs_a_head():
  discriminator = tfdaseg.models.build("output_space_discriminator", num_channels=3,
                                       base_filters=4)
  with pytest.raises(ValueError, match="no AsppClassifier or decode_head head"):
    tfdaseg.models.split_head_variables(discriminator)


def test_keras_file_round_trip(tmp_path):
  model = model_helpers.tiny_generator(bn_mode="frozen", aspp_compat="full")
  model_helpers.randomise_batch_norm(model)
  loaded = model_helpers.assert_keras_round_trip(model, model_helpers.random_image(41, 35),
                                                 str(tmp_path))
  assert loaded.get_layer("main_head").aspp_compat == "full"
  assert not loaded.get_layer("bn1").trainable


def test_serialised_config_rebuilds_the_model():
  model = model_helpers.tiny_generator("deeplab_v2_resnet101_single")
  config = keras.saving.serialize_keras_object(model)
  rebuilt = keras.saving.deserialize_keras_object(config)
  assert len(rebuilt.weights) == len(model.weights)


def test_mixed_bfloat16_forward_and_gradients(mixed_bfloat16):
  model = model_helpers.tiny_generator(bn_mode="train")
  x = model_helpers.random_image(33, 33)
  with tf.GradientTape() as tape:
    out = model(x, training=True)
    loss = sum(tf.reduce_mean(tf.cast(out[key], tf.float32) ** 2)
               for key in ("logits", "aux_logits"))
  assert out["logits"].dtype == tf.bfloat16
  assert all(v.dtype == tf.float32 for v in model.trainable_variables)
  grads = tape.gradient(loss, model.trainable_variables)
  assert all(g is not None for g in grads)
  assert np.isfinite(loss.numpy())


def test_unknown_model_name_lists_known_ones():
  with pytest.raises(KeyError, match="deeplab_v2_resnet101_multi"):
    tfdaseg.models.build("deeplab_v3")
