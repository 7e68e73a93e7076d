"""HRDA around a MiT generator: PyTorch parity of both paths, the windows, the random detail crop,
the teacher's sliding path, saving, and the HRDA checkpoint layout.

Fixture: tools/make_hrda_parity_fixtures.py (tests/fixtures/torch_parity/hrda_manifest.json).
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdaseg.models
from tests.helpers import models as model_helpers
from tfdaseg.models import hrda, sliding_window
from tfdaseg.models.dropout import _InputSeededDropout, without_training_randomness
from tfdaseg.models.torch_checkpoint import load_state_dict
from tfdaseg.models.torch_import import import_torch_checkpoint, load_torch_state_dict

with open(model_helpers.torch_parity_path("hrda_manifest.json")) as _f:
  MANIFEST = json.load(_f)
RTOL = 1e-4
TINY_HRDA = {"detail_crop": 32, "attention_embed_dim": 8}


def _tiny_hrda(num_classes: int = 5, **hrda_options) -> keras.Model:
  return model_helpers.tiny_generator("daformer_mit_b0", num_classes=num_classes,
                                      hrda={**TINY_HRDA, **hrda_options})


def _mmseg_boxes(height, width, crop, stride):
  """HRDAEncoderDecoder.extract_slide_feat's loops."""
  boxes = []
  for h_idx in range(max(height - crop[0] + stride[0] - 1, 0) // stride[0] + 1):
    for w_idx in range(max(width - crop[1] + stride[1] - 1, 0) // stride[1] + 1):
      y2, x2 = min(h_idx * stride[0] + crop[0], height), min(w_idx * stride[1] + crop[1], width)
      boxes.append([max(y2 - crop[0], 0), y2, max(x2 - crop[1], 0), x2])
  return boxes


@pytest.mark.parametrize("height,width", [(64, 96), (1024, 2048), (50, 70), (20, 100)])
def test_slide_boxes_are_mmseg_windows(height, width):
  for crop, stride in (((32, 32), (16, 16)), ((512, 512), (256, 256)), ((24, 40), (24, 40))):
    actual = sliding_window.slide_boxes(height, width, crop, stride).numpy().tolist()
    expected = [[y1, min(y2, y1 + crop[0]), x1, min(x2, x1 + crop[1])]
                for y1, y2, x1, x2 in _mmseg_boxes(height, width, crop, stride)]
    assert actual == expected


def test_merge_windows_averages_overlaps_and_leaves_zeros_elsewhere():
  rng = np.random.default_rng(0)
  starts = np.array([[0, 0], [2, 3], [5, 5]])
  values = rng.normal(size=(3 * 2, 4, 4, 3)).astype(np.float32)
  total, count = np.zeros((2, 10, 12, 3)), np.zeros((10, 12))
  for i, (row, col) in enumerate(starts):
    total[:, row:row + 4, col:col + 4] += values[i * 2:(i + 1) * 2]
    count[row:row + 4, col:col + 4] += 1
  expected = total / np.maximum(count, 1)[None, :, :, None]
  actual = sliding_window.merge_windows(tf.constant(values), tf.constant(starts, tf.int32),
                                        tf.constant([10, 12]))
  np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)
  covered = sliding_window.coverage(tf.constant([[0, 4, 0, 4], [5, 9, 5, 9]]), [10, 12])
  np.testing.assert_array_equal(covered, (count > 0) & ~((count == 1) & (np.arange(12) >= 3)[None]
                                                        & (np.arange(10) >= 2)[:, None]
                                                        & (np.arange(10) < 6)[:, None]
                                                        & (np.arange(12) < 7)[None]))


_FIXTURE_MODEL = {"num_classes": MANIFEST["num_classes"], "embed_dim": MANIFEST["embed_dim"],
                  "encoder_options": MANIFEST["mit"], "bn_mode": "frozen",
                  "hrda": {"detail_crop": MANIFEST["detail_crop"],
                           "attention_embed_dim": MANIFEST["embed_dim"]}}


def _imported() -> keras.Model:
  model, report = import_torch_checkpoint(
      model_helpers.torch_parity_path(MANIFEST["checkpoint"]), "daformer_mit_b0",
      **_FIXTURE_MODEL)
  assert not report.left_at_init and not report.skipped
  return model


def test_a_published_uda_checkpoint_imports_its_student():
  # DAFormer/HRDA release their UDA module's state dict: model.*, ema_model.*, imnet_model.*.
  state = load_state_dict(model_helpers.torch_parity_path(MANIFEST["checkpoint"]))
  uda = {**{f"model.{k}": v for k, v in state.items()},
         **{f"ema_model.{k}": v * 0.5 for k, v in state.items()},
         **{f"imnet_model.{k}": v + 1.0 for k, v in state.items()}}
  model = tfdaseg.models.build("daformer_mit_b0", **_FIXTURE_MODEL)
  report = load_torch_state_dict(model, uda, "daformer_mit_b0")
  assert not report.left_at_init
  assert {key.split(".", 1)[0] for key, _ in report.skipped} == {"ema_model", "imnet_model"}
  expected = np.load(model_helpers.torch_parity_path(MANIFEST["outputs"]))
  outputs = model(expected["input"], training=False)
  assert _relative(outputs["logits"], expected["fused_slide"]) <= RTOL


def _relative(actual, expected) -> float:
  return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


def test_sliding_inference_matches_hrda_encode_decode():
  expected = np.load(model_helpers.torch_parity_path(MANIFEST["outputs"]))
  outputs = _imported()(expected["input"], training=False)
  assert _relative(outputs["logits"], expected["fused_slide"]) <= RTOL
  # The windows cover the image: the detail box is all of it.
  assert outputs["detail_box"].numpy().tolist() == [[0, 64, 0, 96]]


def test_training_crop_matches_hrda_forward_train(monkeypatch):
  expected = np.load(model_helpers.torch_parity_path(MANIFEST["outputs"]))
  model = _imported()
  for layer in model.layers:  # Dropout off (the fixture is in eval mode), the crop kept.
    if isinstance(layer, _InputSeededDropout):
      layer.rate = 0.0
  monkeypatch.setattr(hrda.DetailWindows, "random_box",
                      lambda self, images: tf.constant([MANIFEST["crop_box"]], tf.int32))
  outputs = model(expected["input"], training=True)
  assert _relative(outputs["logits"], expected["fused_crop"]) <= RTOL
  y1, y2, x1, x2 = (v // 4 for v in MANIFEST["crop_box"])
  detail = outputs["detail_logits"].numpy()
  assert _relative(detail[:, y1:y2, x1:x2], expected["detail_crop"]) <= RTOL
  detail[:, y1:y2, x1:x2] = 0
  assert not detail.any()


def test_random_detail_window_is_aligned_inside_and_a_function_of_the_input():
  layer = hrda.DetailWindows((32, 32), (16, 16), 8, name="hrda_detail_windows")
  boxes = set()
  for seed in range(12):
    images = tf.constant(model_helpers.random_image(72, 100, batch=2, seed=seed))
    windows, box = layer(images, training=True)
    y1, y2, x1, x2 = box.numpy()[0].tolist()
    assert (y2 - y1, x2 - x1) == (32, 32) and windows.shape == (2, 32, 32, 3)
    assert y1 % 8 == 0 and x1 % 8 == 0 and 0 <= y1 <= 40 and 0 <= x1 <= 64
    np.testing.assert_array_equal(windows, images[:, y1:y2, x1:x2])
    assert layer(images, training=True)[1].numpy().tolist() == box.numpy().tolist()
    boxes.add((y1, x1))
  assert len(boxes) > 4
  # Inference and a teacher (randomness off) take the sliding windows.
  _, slide = layer(images, training=False)
  assert len(slide) == 4 * 6  # rows 0, 16, 32, 40; columns 0, 16, 32, 48, 64, 68
  layer.disable_randomness()
  assert layer(images, training=True)[1].numpy().tolist() == slide.numpy().tolist()


def test_teacher_copy_takes_the_sliding_path_in_training_mode():
  model = _tiny_hrda()
  teacher = without_training_randomness(keras.models.clone_model(model))
  teacher.set_weights(model.get_weights())
  images = model_helpers.random_image(64, 64, batch=2)
  student_box = model(images, training=True)["detail_box"].numpy()
  assert (student_box[0, 1] - student_box[0, 0]) == 32
  assert teacher(images, training=True)["detail_box"].numpy().tolist() == [[0, 64, 0, 64]] * 2


def test_layers_are_shared_not_nested_and_the_model_saves(tmp_path):
  base = model_helpers.tiny_generator("daformer_mit_b0", num_classes=5)
  model = _tiny_hrda()
  assert model.name == base.name
  assert not any(isinstance(layer, keras.Model) for layer in model.layers)
  attention = [w for w in model.weights if w.path.startswith(hrda.ATTENTION_PREFIX)]
  assert len(model.weights) == len(base.weights) + len(attention) and attention
  backbone, heads = tfdaseg.models.split_head_variables(model)
  trainable = [w for w in model.trainable_weights if w.path.startswith(hrda.ATTENTION_PREFIX)]
  assert {id(v) for v in trainable} <= {id(v) for v in heads}
  assert tfdaseg.models.head_learning_rate_multiplier(model) == 10.0
  images = model_helpers.random_image(64, 64)
  path = str(tmp_path / "hrda.keras")
  model.save(path)
  loaded = keras.models.load_model(path, compile=False)
  model_helpers.assert_outputs_close(loaded(images, training=False),
                                     model(images, training=False))


def test_bad_settings_are_named():
  with pytest.raises(ValueError, match="unknown HRDA options \\['crop'\\]"):
    hrda.HrdaConfig.from_options({"crop": 4})
  with pytest.raises(ValueError, match="context_scale"):
    hrda.HrdaConfig.from_options({"context_scale": 0.3})
  with pytest.raises(ValueError, match="needs a MiT generator"):
    model_helpers.tiny_generator("deeplab_v2_resnet101_single", hrda={})
