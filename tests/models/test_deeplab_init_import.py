"""The DeepLab-v2 init files -> both ResNet generators -> `--restore_from`, as the references start.

AdaptSegNet's DeepLab_resnet_pretrained_init-f81d91e8.pth and ADVENT's
DeepLab_resnet_pretrained_imagenet.pth share one key layout: every key prefixed "Scale.", one
classifier `layer5` on layer4 (2048 channels at full size) for other classes. The fixture
(tools/make_torch_parity_fixtures.py) is a tiny checkpoint in that layout, legacy format, 21
classes, with its backbone's PyTorch features.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdaseg.models
from tests.helpers import models as model_helpers
from tfdaseg.models.outputs import LOGIT_KEYS
from tfdaseg.models.torch_checkpoint import load_state_dict
from tfdaseg.models.torch_import import load_torch_state_dict
from tfdaseg.training.runner import restore_generator_weights
from tools.torch_parity_weights import deterministic_input

INIT = model_helpers.torch_parity_manifest()["deeplab_init"]["deeplab_init_tiny"]
OPTIONS = {"blocks": tuple(INIT["options"]["blocks"]), "base_width": INIT["options"]["base_width"],
           "num_classes": 19}
GENERATORS = ["deeplab_v2_resnet101_multi", "deeplab_v2_resnet101_single"]
HEAD_KEYS = sorted(f"layer5.conv2d_list.{i}.{kind}"
                   for i in range(4) for kind in ("weight", "bias"))
REPO = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)


@pytest.fixture(scope="module")
def state_dict():
  return load_state_dict(model_helpers.torch_parity_path(INIT["checkpoint"]))


def _head_weights(model: keras.Model) -> dict:
  return {v.path: v.numpy().copy() for layer in model.layers
          if isinstance(layer, tfdaseg.models.AsppClassifier) for v in layer.weights}


def test_the_multi_level_layout_refuses_the_init(state_dict):
  # The fixture is in the init files' layout...
  assert all(key.startswith("Scale.") for key in state_dict)
  assert sorted(k for k in state_dict if k.startswith("Scale.layer5.")) == [
      f"Scale.{key}" for key in HEAD_KEYS]
  layer4_channels = 32 * OPTIONS["base_width"]
  assert state_dict["Scale.layer5.conv2d_list.0.weight"].shape == (
      INIT["head_classes"], layer4_channels, 3, 3)
  assert not any(".layer6." in key or "num_batches_tracked" in key for key in state_dict)
  # ...which the multi-level layout refuses: its layer5 is the aux head on layer3, the init's
  # layer5 reads layer4.
  model = tfdaseg.models.build("deeplab_v2_resnet101_multi", **OPTIONS)
  with pytest.raises(ValueError, match=r"missing keys \['layer6\..*layer5\.conv2d_list\.0\.weight: "
                                       r"shape \(21, 64, 3, 3\) does not fit aux_head.*; it fits "
                                       r"layout deeplab_resnet_init, deeplab_v2_resnet101_single$"):
    load_torch_state_dict(model, state_dict, "deeplab_v2_resnet101_multi")
  with pytest.raises(ValueError, match="layout deeplab_v2_resnet101_multi does not fit model "
                                       "deeplab_v2_resnet101_single"):
    load_torch_state_dict(tfdaseg.models.build("deeplab_v2_resnet101_single", **OPTIONS),
                          state_dict, "deeplab_v2_resnet101_multi")


# ADVENT's training ran PyTorch >= 0.4, whose state dicts also hold BatchNorm step counters.
WITH_STEP_COUNTERS = {"adaptsegnet": False, "advent": True}


@pytest.mark.parametrize("reference", sorted(WITH_STEP_COUNTERS))
@pytest.mark.parametrize("architecture", GENERATORS)
def test_init_layout_loads_the_backbone_and_keeps_fresh_heads(state_dict, architecture,
                                                              reference):
  state = dict(state_dict)
  if WITH_STEP_COUNTERS[reference]:
    state.update({k.replace("running_mean", "num_batches_tracked"): np.array(5)
                  for k in state_dict if k.endswith("running_mean")})
  model = tfdaseg.models.build(architecture, **OPTIONS)
  fresh = _head_weights(model)
  report = load_torch_state_dict(model, state, "deeplab_resnet_init")

  assert [key for key, _ in report.skipped] == HEAD_KEYS
  assert len(report.loaded) == len(state_dict) - len(HEAD_KEYS)
  assert sorted(report.left_at_init) == sorted(fresh)
  for path, value in _head_weights(model).items():
    np.testing.assert_array_equal(value, fresh[path], err_msg=path)
  summary = report.summary()
  assert all(f"skipped {key}: " in summary for key in HEAD_KEYS)
  assert all(f"left at initialisation: {path} " in summary for path in fresh)
  spec = INIT["input"]
  out = model(deterministic_input(tuple(spec["shape"]), spec["seed"], spec["kind"]),
              training=False)
  expected = np.load(model_helpers.torch_parity_path(INIT["outputs"]))
  for key in INIT["output_keys"]:
    model_helpers.assert_outputs_close(out[key], expected[key], rtol=1e-4)


@pytest.mark.parametrize("architecture", GENERATORS)
def test_imported_init_restores_into_a_training_generator(tmp_path, architecture):
  output = tmp_path / "init.keras"
  result = subprocess.run(
      [sys.executable, "-m", "tools.import_torch_checkpoint",
       f"--checkpoint={model_helpers.torch_parity_path(INIT['checkpoint'])}",
       "--layout=deeplab_resnet_init", f"--architecture={architecture}", "--num_classes=19",
       "--blocks=" + ",".join(map(str, OPTIONS["blocks"])),
       f"--base_width={OPTIONS['base_width']}", f"--output={output}"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert all(f"skipped {key}: " in result.stdout for key in HEAD_KEYS)
  assert "left at initialisation: main_head/conv2d_list_0_kernel" in result.stdout

  generator = tfdaseg.models.build(architecture, bn_mode="reference", **OPTIONS)
  restore_generator_weights(generator, str(output))
  imported = keras.models.load_model(str(output))
  for mine, theirs in zip(generator.weights, imported.weights):
    np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.path)
  # One training step from the restored weights.
  image = model_helpers.random_image(41, 33, batch=2)
  with tf.GradientTape() as tape:
    out = generator(image, training=True)
    loss = sum(tf.reduce_mean(out[key] ** 2) for key in LOGIT_KEYS if key in out)
  grads = tape.gradient(loss, generator.trainable_variables)
  keras.optimizers.SGD(1e-3).apply_gradients(zip(grads, generator.trainable_variables))
  assert np.isfinite(loss.numpy()) and all(g is not None for g in grads)
