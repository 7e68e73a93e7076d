"""BUILD.md's "Adding a method" example, run as written: a method with its own hyper-parameter,
a labelled-target stream and an EMA teacher, added in one module outside the package (named in
TFDASEG_PLUGINS) and trained through `python -m tfdaseg.train`."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import training as helpers
from tfdaseg.evaluation.loading import load_model
from tfdaseg.run_folder import list_checkpoints, read_generator_spec, restore_generator

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_md_module() -> str:
  with open(os.path.join(REPO, "BUILD.md")) as f:
    text = f.read()
  match = re.search(r"<!-- add-a-method: begin.*?-->\n```python\n(.*?)```\n<!-- add-a-method: end",
                    text, re.S)
  assert match, "BUILD.md lost its add-a-method example"
  return match.group(1)


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory):
  return helpers.write_tiny_tfrecords(str(tmp_path_factory.mktemp("data")))


def train(plugin_dir: str, model_dir: str, tfrecords: dict, *extra: str):
  env = {**os.environ, "TFDASEG_PLUGINS": "mean_teacher_toy",
         "PYTHONPATH": os.pathsep.join([plugin_dir, REPO])}
  command = [sys.executable, "-m", "tfdaseg.train", "--method=mean_teacher_toy",
             f"--model_dir={model_dir}", f"--source_train={tfrecords['source_train']}",
             f"--target_train={tfrecords['target_train']}",
             f"--labelled_target_train={tfrecords['target_val']}", *helpers.TINY_TRAIN_FLAGS,
             *extra]
  return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_the_build_md_method_trains_through_the_cli(tfrecords, tmp_path):
  plugin_dir = tmp_path / "plugins"
  plugin_dir.mkdir()
  (plugin_dir / "mean_teacher_toy.py").write_text(build_md_module())
  model_dir = str(tmp_path / "run")
  result = train(str(plugin_dir), model_dir, tfrecords, "--consistency_weight=0.5",
                 "--labelled_target_batch_size=2")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "trained steps 0..4" in result.stdout
  assert [step for step, _ in list_checkpoints(model_dir)] == [2, 4]
  assert read_generator_spec(model_dir)["inference_network"] == "teacher"
  teacher, _ = restore_generator(model_dir)
  student, _ = restore_generator(model_dir, network="generator")
  assert any(np.abs(a - b).max() > 0 for a, b in zip(teacher.get_weights(),
                                                      student.get_weights()))
  # Evaluation and export load the teacher; --network=generator overrides it.
  for network, expected in ((None, teacher), ("generator", student)):
    loaded = load_model("model_dir", model_dir, network=network)
    for a, b in zip(loaded.generator.get_weights(), expected.get_weights()):
      np.testing.assert_array_equal(a, b)
  # Its hyper-parameter is a checked flag like any other.
  bad = train(str(plugin_dir), str(tmp_path / "bad"), tfrecords, "--consistency_weight=-1")
  assert bad.returncode != 0
  assert "--consistency_weight=-1.0 must be >= 0" in bad.stderr
  missing = train(str(plugin_dir), str(tmp_path / "missing"), tfrecords,
                  "--labelled_target_train=")
  assert "reads the labelled_target stream: --labelled_target_train" in missing.stderr
