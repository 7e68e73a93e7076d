"""DeepLab-v2 VGG-16 generator: layout, geometry and saving."""

import keras
import pytest

import tfdaseg.models
from tests.helpers import models as model_helpers


def torch_output_size(n: int) -> int:
  """Three 2x2/2 floor-mode pools (pool1..pool3); every conv keeps the size."""
  for _ in range(3):
    n //= 2
  return n


@pytest.mark.parametrize("height,width", [(64, 48), (45, 67)])
def test_vgg_outputs(height, width):
  model = model_helpers.tiny_generator("deeplab_v2_vgg16", num_classes=5)
  out = model(model_helpers.random_image(height, width), training=False)
  assert sorted(out) == ["features", "logits"]
  size = (1, torch_output_size(height), torch_output_size(width))
  assert tuple(out["logits"].shape) == size + (5,)
  assert tuple(out["features"].shape) == size + (64,)  # fc7: 16 * base_width


def test_vgg16_layout_matches_deeplab_vgg():
  model = tfdaseg.models.build("deeplab_v2_vgg16", num_classes=19)
  convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
  assert [c.name for c in convs][-5:] == ["block5_conv1", "block5_conv2", "block5_conv3", "fc6",
                                         "fc7"]
  assert len(convs) == 15
  assert [c.dilation_rate[0] for c in convs] == [1] * 10 + [2, 2, 2, 4, 4]
  assert model.get_layer("fc6").kernel.shape == (3, 3, 512, 1024)
  assert model.get_layer("fc7").kernel.shape == (3, 3, 1024, 1024)
  pools = [layer.name for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
  assert pools == ["block1_pool", "block2_pool", "block3_pool"]
  backbone, head = tfdaseg.models.split_head_variables(model)
  assert len(backbone) == 30 and len(head) == 4


def test_vgg_round_trip(tmp_path):
  model = model_helpers.tiny_generator("deeplab_v2_vgg16", aspp_compat="full")
  model_helpers.assert_keras_round_trip(model, model_helpers.random_image(32, 40), str(tmp_path))
