"""The MiT generators with imported weights reproduce the PyTorch reference (DAFormer's MiT,
DAFormer and SegFormer heads), and the ImageNet MiT checkpoints load in all three formats.

Fixtures: tools/make_daformer_parity_fixtures.py (tests/fixtures/torch_parity/
daformer_manifest.json). Tiny models ship their checkpoints; MiT-B0 with DAFormer's full-size
head regenerates its weights from the seed (tools/torch_parity_weights.py).
"""

import json

import keras
import numpy as np
import pytest

import tfdaseg.models
from tests.helpers import models as model_helpers
from tfdaseg.models.imagenet_init import load_imagenet_weights
from tfdaseg.models.mix_transformer import MIT_CONFIGS
from tfdaseg.models.torch_checkpoint import CheckpointError
from tfdaseg.models.torch_import import (expected_torch_shapes, import_torch_checkpoint,
                                         load_torch_state_dict)
from tools.torch_parity_weights import deterministic_input, deterministic_state_dict

with open(model_helpers.torch_parity_path("daformer_manifest.json")) as _f:
  MANIFEST = json.load(_f)
GENERATORS = MANIFEST["generators"]
IMAGENET = MANIFEST["imagenet"]["mit_imagenet_tiny"]
# The requirement: outputs agree to 1e-4 of their scale.
RTOL = 1e-4
STAGES = ("stage1", "stage2", "stage3", "stage4")


def _options(mit: dict, head_options: dict) -> dict:
  """Build options of a generator matching a fixture's PyTorch model."""
  if "channels" in head_options:  # tfdaseg's DAFormer head has `embed_dim` channels throughout.
    assert head_options["channels"] == head_options["embed_dim"]
  return {"num_classes": head_options["num_classes"], "embed_dim": head_options["embed_dim"],
          "encoder_options": mit}


def _stage_outputs(model: keras.Model, inputs: np.ndarray) -> dict:
  probe = keras.Model(model.input, {f"stage{i}": model.get_layer(f"norm{i}").output
                                     for i in range(1, 5)})
  return probe(inputs, training=False)


def _expected(entry: dict) -> np.lib.npyio.NpzFile:
  return np.load(model_helpers.torch_parity_path(entry["outputs"]))


@pytest.mark.parametrize("name", ["daformer_tiny", "segformer_tiny"])
def test_tiny_generator_parity(name):
  entry = GENERATORS[name]
  model, report = import_torch_checkpoint(
      model_helpers.torch_parity_path(entry["checkpoints"][0]), entry["architecture"],
      **_options(entry["mit"], entry["head_options"]))
  assert not report.left_at_init
  # SegFormerHead never uses the conv_seg its base class creates; nothing else is skipped.
  assert {key.rsplit(".", 1)[0] for key, _ in report.skipped} <= {"decode_head.conv_seg"}
  expected = _expected(entry)
  out = model(expected["input"], training=False)
  for key in ("logits", "features"):
    model_helpers.assert_outputs_close(out[key], expected[key], rtol=RTOL)
  stages = _stage_outputs(model, expected["input"])
  for key in STAGES:
    model_helpers.assert_outputs_close(stages[key], expected[key], rtol=RTOL)


def test_full_size_mit_b0_daformer_parity():
  entry = GENERATORS["daformer_mit_b0_full"]
  # The fixture records the architecture's tuples; mlp_ratio and recompute are not among them.
  assert entry["mit"] == {key: list(value) for key, value in vars(MIT_CONFIGS["b0"]).items()
                          if key not in ("mlp_ratio", "recompute")}
  model = tfdaseg.models.build("daformer_mit_b0", num_classes=entry["head_options"]["num_classes"])
  shapes = expected_torch_shapes(model, "daformer_mit_b0")
  report = load_torch_state_dict(model, deterministic_state_dict(shapes, entry["seed"]),
                                 "daformer_mit_b0")
  assert len(report.loaded) == len(shapes) and not report.left_at_init
  spec = entry["input"]
  out = model(deterministic_input(tuple(spec["shape"]), spec["seed"], spec["kind"]),
              training=False)
  expected = _expected(entry)
  for key in entry["output_keys"]:
    model_helpers.assert_outputs_close(out[key], expected[key], rtol=RTOL)


def _tiny_daformer() -> keras.Model:
  return tfdaseg.models.build("daformer_mit_b0", num_classes=3, embed_dim=8,
                              encoder_options=IMAGENET["mit"])


@pytest.mark.parametrize("file_format", sorted(IMAGENET["checkpoints"]))
def test_imagenet_checkpoint_initialises_the_encoder(file_format):
  model = _tiny_daformer()
  head_before = [w.numpy() for w in model.get_layer("decode_head_classifier").weights]
  report = load_imagenet_weights(model, model_helpers.torch_parity_path(
      IMAGENET["checkpoints"][file_format]), "daformer_mit_b0")
  assert report.unused == ["head.bias", "head.weight"]
  assert report.left_at_init and all(name.startswith("decode_head_")
                                     for name in report.left_at_init)
  for before, after in zip(head_before, model.get_layer("decode_head_classifier").weights):
    np.testing.assert_array_equal(before, after.numpy())
  expected = _expected(IMAGENET)
  stages = _stage_outputs(model, expected["input"])
  for key in STAGES:
    model_helpers.assert_outputs_close(stages[key], expected[key], rtol=RTOL)


def test_a_generator_checkpoint_is_not_imagenet_weights():
  path = model_helpers.torch_parity_path(GENERATORS["daformer_tiny"]["checkpoints"][0])
  with pytest.raises(ValueError) as error:
    load_imagenet_weights(_tiny_daformer(), path, "daformer_mit_b0")
  message = str(error.value)
  assert "\n" not in message
  assert message.startswith(f"{path}: does not fit daformer_mit_b0: cannot load the state dict "
                            "as mit_imagenet: unexpected keys ['backbone.")
  assert "missing keys ['patch_embed1.proj.weight'" in message


def test_imagenet_weights_of_another_variant_are_refused():
  path = model_helpers.torch_parity_path(IMAGENET["checkpoints"]["huggingface_safetensors"])
  model = tfdaseg.models.build("daformer_mit_b0", num_classes=3, embed_dim=8)
  with pytest.raises(ValueError, match=r"does not fit daformer_mit_b0: .*patch_embed1\.proj"
                                       r"\.weight: shape \(4, 3, 7, 7\) does not fit"):
    load_imagenet_weights(model, path, "daformer_mit_b0")


def test_huggingface_key_without_its_value_is_named(tmp_path):
  import safetensors.numpy  # pylint: disable=import-outside-toplevel

  source = model_helpers.torch_parity_path(IMAGENET["checkpoints"]["huggingface_safetensors"])
  state = safetensors.numpy.load_file(source)
  del state["segformer.encoder.block.0.0.attention.self.value.weight"]
  path = str(tmp_path / "model.safetensors")
  safetensors.numpy.save_file(state, path)
  with pytest.raises(ValueError, match=r"unexpected keys \['segformer\.encoder\.block\.0\.0\."
                                       r"attention\.self\.key\.weight'\]"):
    load_imagenet_weights(_tiny_daformer(), path, "daformer_mit_b0")


def test_damaged_safetensors_file_is_one_line_naming_it(tmp_path):
  with open(model_helpers.torch_parity_path(
      IMAGENET["checkpoints"]["huggingface_safetensors"]), "rb") as f:
    data = f.read()
  path = str(tmp_path / "cut.safetensors")
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(CheckpointError) as error:
    load_imagenet_weights(_tiny_daformer(), path, "daformer_mit_b0")
  assert str(error.value).startswith(f"{path}: not a readable safetensors file")
  assert "\n" not in str(error.value)
