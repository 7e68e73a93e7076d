"""tools/import_torch_checkpoint.py through its command line: outputs, defaults, one-line errors."""

import json
import os
import pickle
import re
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from tests.helpers import models as model_helpers
from tfdaseg.models.torch_checkpoint import load_state_dict

REPO = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)
ERROR = "import_torch_checkpoint: error: "
TINY_MULTI = ["--architecture=deeplab_v2_resnet101_multi", "--num_classes=5", "--blocks=1,1,2,1",
              "--base_width=4"]
# A DAFormer generator with the encoder of the MiT fixtures (daformer_manifest.json).
TINY_MIT_IMAGENET = ["--architecture=daformer_mit_b0", "--layout=mit_imagenet", "--num_classes=5",
                     "--model_options=" + json.dumps(
                         {"encoder_options": model_helpers.TINY_MIT, "embed_dim": 8})]


def run_tool(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "tools.import_torch_checkpoint", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def test_writes_a_loadable_keras_file(tmp_path):
  output = tmp_path / "generator.keras"
  checkpoint = model_helpers.torch_parity_path("resnet_multi_tiny_legacy.pth")
  result = run_tool(f"--checkpoint={checkpoint}", *TINY_MULTI, f"--output={output}")
  assert result.returncode == 0, result.stderr[-2000:]
  state_dict = load_state_dict(checkpoint)
  counters = sum(k.endswith("num_batches_tracked") for k in state_dict)
  assert f"loaded {len(state_dict) - counters} tensors" in result.stdout
  assert f"ignored {counters} entries" in result.stdout
  assert sorted(os.listdir(tmp_path)) == ["generator.keras"]

  loaded = keras.models.load_model(str(output))
  entry = model_helpers.torch_parity_manifest()["fixtures"]["resnet_multi_tiny"]
  expected = np.load(model_helpers.torch_parity_path(entry["outputs"]))
  out = loaded(expected["input"], training=False)
  model_helpers.assert_outputs_close(out["logits"], expected["logits"], rtol=1e-4)


def test_output_space_discriminator_reads_the_class_count(tmp_path):
  entry = model_helpers.torch_parity_manifest()["fixtures"]["discriminator_tiny"]
  classes = entry["options"]["num_channels"]
  output = tmp_path / "discriminator.keras"
  result = run_tool(f"--checkpoint={model_helpers.torch_parity_path(entry['checkpoints'][0])}",
                    "--architecture=output_space_discriminator", f"--num_classes={classes}",
                    f"--base_filters={entry['options']['base_filters']}", f"--output={output}")
  assert result.returncode == 0, result.stderr[-2000:]
  loaded = keras.models.load_model(str(output))
  assert loaded.input_shape[-1] == classes
  expected = np.load(model_helpers.torch_parity_path(entry["outputs"]))
  model_helpers.assert_outputs_close(loaded(expected["input"]), expected["logits"], rtol=1e-4)


def test_imports_the_imagenet_mit_encoder_of_a_safetensors_file(tmp_path):
  with open(model_helpers.torch_parity_path("daformer_manifest.json")) as f:
    entry = json.load(f)["imagenet"]["mit_imagenet_tiny"]
  output = tmp_path / "daformer.keras"
  checkpoint = model_helpers.torch_parity_path(entry["checkpoints"]["huggingface_safetensors"])
  result = run_tool(f"--checkpoint={checkpoint}", *TINY_MIT_IMAGENET, f"--output={output}")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "skipped head.weight: the ImageNet classifier" in result.stdout
  assert "left at initialisation: decode_head_classifier/kernel" in result.stdout
  loaded = keras.models.load_model(str(output))
  expected = np.load(model_helpers.torch_parity_path(entry["outputs"]))
  stage4 = keras.Model(loaded.input, loaded.get_layer("norm4").output)(expected["input"])
  model_helpers.assert_outputs_close(stage4, expected["stage4"], rtol=1e-4)


class _RunsAShellCommand:
  """Pickles as a call to os.system, which would create `marker` if it ran."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


def _malicious(directory) -> str:
  path = os.path.join(directory, "evil.pth")
  with zipfile.ZipFile(path, "w") as archive:
    payload = {"weight": _RunsAShellCommand(os.path.join(directory, "pwned"))}
    archive.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
  return path


def _truncated(directory, name: str) -> str:
  with open(model_helpers.torch_parity_path(name), "rb") as f:
    data = f.read()
  path = os.path.join(directory, f"cut_{name}")
  with open(path, "wb") as f:
    f.write(data[:len(data) // 3])
  return path


# case -> (checkpoint maker, architecture flags, expected problem after "<file>: ").
ERROR_CASES = {
    "refused_pickle": (_malicious, TINY_MULTI, r"refusing to load global \w+\.system"),
    "truncated_legacy": (lambda d: _truncated(d, "resnet_multi_tiny_legacy.pth"), TINY_MULTI,
                         r"truncated (or corrupted|in storage)"),
    "truncated_zip": (lambda d: _truncated(d, "resnet_multi_tiny.pth"), TINY_MULTI,
                      r"truncated or damaged zip archive"),
    "wrong_layout": (lambda d: model_helpers.torch_parity_path("resnet_multi_tiny.pth"),
                     ["--architecture=deeplab_v2_resnet101_single", "--num_classes=5",
                      "--blocks=1,1,2,1", "--base_width=4"],
                     r"cannot load the state dict as deeplab_v2_resnet101_single: unexpected keys"),
    "missing_file": (lambda d: os.path.join(d, "absent.pth"), TINY_MULTI,
                     r"No such file or directory"),
    "mit_generator_checkpoint_as_imagenet": (
        lambda d: model_helpers.torch_parity_path("daformer_tiny.pth"), TINY_MIT_IMAGENET,
        r"cannot load the state dict as mit_imagenet: unexpected keys \['backbone\.block1\.0\."
        r".*; it fits layout daformer_mit_b0$"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_are_one_line_naming_the_file(tmp_path, case):
  make_checkpoint, flags, problem = ERROR_CASES[case]
  checkpoint = make_checkpoint(str(tmp_path))
  output = tmp_path / "out.keras"
  result = run_tool(f"--checkpoint={checkpoint}", *flags, f"--output={output}")
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith(ERROR)]
  assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0])
  assert errors[0].startswith(f"{ERROR}{checkpoint}: ")
  assert re.search(problem, errors[0]), errors[0]
  assert not output.exists() and not (tmp_path / "pwned").exists()
