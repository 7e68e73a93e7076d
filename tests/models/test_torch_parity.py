"""Our models with imported weights reproduce PyTorch re-implementations of the reference models.

Fixtures: tools/make_torch_parity_fixtures.py. Tiny models ship their `.pth` files; full-size
ones (ResNet-101, VGG-16, the 64-filter discriminator) regenerate their weights and input from
seeds with tools/torch_parity_weights.py, and only the PyTorch outputs are committed.
"""

import numpy as np
import pytest

import tfdaseg.models
from tests.helpers import models as model_helpers
from tfdaseg.models.torch_import import (expected_torch_shapes, import_torch_checkpoint,
                                         load_torch_state_dict)
from tools.torch_parity_weights import deterministic_input, deterministic_state_dict

MANIFEST = model_helpers.torch_parity_manifest()["fixtures"]
# The requirement: outputs agree to 1e-4 of their scale.
RTOL = 1e-4


def _options(entry: dict) -> dict:
  options = dict(entry["options"])
  if "blocks" in options:
    options["blocks"] = tuple(options["blocks"])
  return options


def _compare(model, entry: dict, inputs: np.ndarray) -> None:
  expected = np.load(model_helpers.torch_parity_path(entry["outputs"]))
  out = model(inputs, training=False)
  if not isinstance(out, dict):
    out = {"logits": out}
  for key in entry["output_keys"]:
    model_helpers.assert_outputs_close(out[key], expected[key], rtol=RTOL)


TINY_CASES = [(name, path) for name, entry in MANIFEST.items() for path in entry["checkpoints"]]


@pytest.mark.parametrize("name,checkpoint", TINY_CASES, ids=[c for _, c in TINY_CASES])
def test_tiny_checkpoint_parity(name, checkpoint):
  entry = MANIFEST[name]
  model, report = import_torch_checkpoint(model_helpers.torch_parity_path(checkpoint),
                                          entry["architecture"], **_options(entry))
  assert not report.skipped and not report.left_at_init
  inputs = np.load(model_helpers.torch_parity_path(entry["outputs"]))["input"]
  _compare(model, entry, inputs)


FULL_CASES = [name for name, entry in MANIFEST.items() if not entry["checkpoints"]]


@pytest.mark.parametrize("name", FULL_CASES)
def test_full_size_parity(name):
  entry = MANIFEST[name]
  model = tfdaseg.models.build(entry["architecture"], **_options(entry))
  shapes = expected_torch_shapes(model, entry["architecture"])
  state = deterministic_state_dict(shapes, entry["seed"])
  report = load_torch_state_dict(model, state, entry["architecture"])
  assert len(report.loaded) == len(shapes)
  spec = entry["input"]
  _compare(model, entry, deterministic_input(tuple(spec["shape"]), spec["seed"], spec["kind"]))


TRAIN_MODE = model_helpers.torch_parity_manifest()["train_mode"]


@pytest.mark.parametrize("name", sorted(TRAIN_MODE))
def test_reference_batch_norm_matches_torch_train_mode(name):
  # The reference trains in train mode with frozen BatchNorm affine parameters: one forward
  # normalises with batch statistics and moves the running statistics (unbiased variance).
  entry = TRAIN_MODE[name]
  model, _ = import_torch_checkpoint(model_helpers.torch_parity_path(entry["weights"]),
                                     entry["architecture"], bn_mode="reference",
                                     **_options(entry))
  spec = entry["input"]
  out = model(deterministic_input(tuple(spec["shape"]), spec["seed"], spec["kind"]),
              training=True)
  expected = np.load(model_helpers.torch_parity_path(entry["outputs"]))
  for key in entry["output_keys"]:
    model_helpers.assert_outputs_close(out[key], expected[key], rtol=RTOL)
  layers = [layer for layer in model.layers
            if isinstance(layer, tfdaseg.models.ReferenceBatchNormalization)]
  assert 2 * len(layers) == sum(key.startswith("state/") for key in expected.files)
  for layer in layers:
    prefix = "state/" + layer.name.replace("_", ".")
    model_helpers.assert_outputs_close(layer.moving_mean, expected[f"{prefix}.running_mean"],
                                       rtol=RTOL)
    model_helpers.assert_outputs_close(layer.moving_variance, expected[f"{prefix}.running_var"],
                                       rtol=RTOL)
