"""PyTorch state dict -> Keras mapping: strictness, head skipping, prefixes, the DeepLab init."""

import keras
import numpy as np
import pytest

import tfdaseg.models
from tests.helpers import models as model_helpers
from tfdaseg.models.torch_checkpoint import load_state_dict
from tfdaseg.models.torch_import import expected_torch_shapes, load_torch_state_dict

ARCHITECTURE = "deeplab_v2_resnet101_multi"
TINY = {"blocks": (1, 1, 2, 1), "base_width": 4}  # As resnet_multi_tiny in the fixtures.


@pytest.fixture(scope="module")
def state_dict():
  return load_state_dict(model_helpers.torch_parity_path("resnet_multi_tiny.pth"))


def tiny_model(num_classes: int = 5, name: str = ARCHITECTURE) -> keras.Model:
  return tfdaseg.models.build(name, num_classes=num_classes, **TINY)


def test_expected_keys_are_the_reference_state_dict(state_dict):
  shapes = expected_torch_shapes(tiny_model(), ARCHITECTURE)
  reference = {k: v.shape for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  assert shapes == reference


def test_missing_backbone_key_fails_before_assigning(state_dict):
  model = tiny_model()
  before = model.get_layer("conv1").kernel.numpy().copy()
  partial = {k: v for k, v in state_dict.items() if k != "layer3.1.bn2.running_var"}
  with pytest.raises(ValueError, match=r"missing keys \['layer3\.1\.bn2\.running_var'\]"):
    load_torch_state_dict(model, partial, ARCHITECTURE)
  np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), before)


def test_unexpected_key_fails(state_dict):
  extra = dict(state_dict, **{"layer7.weight": np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match=r"unexpected keys \['layer7\.weight'\]"):
    load_torch_state_dict(tiny_model(), extra, ARCHITECTURE)


def test_backbone_shape_mismatch_fails(state_dict):
  with pytest.raises(ValueError, match=r"conv1\.weight: shape \(4, 3, 7, 7\) does not fit"):
    load_torch_state_dict(tfdaseg.models.build(ARCHITECTURE, num_classes=5, blocks=(1, 1, 2, 1),
                                               base_width=8), state_dict, ARCHITECTURE)


def test_heads_with_another_class_count_are_skipped(state_dict):
  model = tiny_model(num_classes=3)
  head_before = model.get_layer("main_head").kernels[0].numpy().copy()
  report = load_torch_state_dict(model, state_dict, ARCHITECTURE)
  assert {key.split(".")[0] for key, _ in report.skipped} == {"layer5", "layer6"}
  assert len(report.skipped) == 16
  assert all(reason == "class count differs from the model's" for _, reason in report.skipped)
  assert sorted(report.left_at_init) == sorted(
      v.path for name in ("aux_head", "main_head") for v in model.get_layer(name).weights)
  np.testing.assert_array_equal(model.get_layer("main_head").kernels[0].numpy(), head_before)
  np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(),
                                np.transpose(state_dict["conv1.weight"], (2, 3, 1, 0)))


def test_single_level_layout_rejects_a_multi_level_checkpoint(state_dict):
  # layer5 of the multi-level model is the 64-channel aux head; the single-level main head reads
  # 128 channels, which is not a class-count difference, so nothing is silently skipped.
  with pytest.raises(ValueError, match=r"unexpected keys \['layer6\..*layer5\.conv2d_list\.0\."
                                       r"weight: shape \(5, 64, 3, 3\) does not fit"):
    load_torch_state_dict(tiny_model(name="deeplab_v2_resnet101_single"), state_dict,
                          "deeplab_v2_resnet101_single")


def test_init_layout_needs_a_resnet_backbone(state_dict):
  vgg = tfdaseg.models.build("deeplab_v2_vgg16", num_classes=5, base_width=2)
  with pytest.raises(ValueError, match="layout deeplab_resnet_init does not fit model "
                                       "deeplab_v2_vgg16: it has no DeepLab-v2 ResNet backbone"):
    load_torch_state_dict(vgg, state_dict, "deeplab_resnet_init")
