"""`python -m tfdaseg.train` end to end on converted miniature TFRecords."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from tests.helpers import training as helpers
from tfdaseg import evaluate, train
from tfdaseg.evaluation import reports
from tfdaseg.run_folder import list_checkpoints, restore_generator

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "gta5_to_cityscapes", "adaptsegnet_multi.cfg")
# The run whose resume must be exact through the CLI: an EMA teacher with ClassMix, strong
# augmentation, random crops and MIC masks drawn from the step's seed, an SGD generator. The
# discriminators' Adam state (AdaptSegNet) goes through the same checkpoint; its restore is
# checked per method in-process (tests/helpers/methods.py check_resume_identity).
RESUMED_RUN = (f"--flagfile={os.path.join(REPO, 'configs', 'gta5_to_cityscapes', 'dacs.cfg')}",
               "--mic", "--mic_block_size=8", '--source_augment={"crop_size": [24, 24]}',
               '--target_augment={"crop_size": [24, 24]}')


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory):
  return helpers.write_tiny_tfrecords(str(tmp_path_factory.mktemp("data")))


def train_command(model_dir: str, tfrecords: dict, *extra: str,
                  config: tuple[str, ...] = (f"--flagfile={CONFIG}",)) -> list[str]:
  return [sys.executable, "-m", "tfdaseg.train", *config,
          f"--model_dir={model_dir}", *(f"--{k}={v}" for k, v in tfrecords.items()),
          *helpers.TINY_TRAIN_FLAGS, *extra]


def test_adaptsegnet_multi_trains_evaluates_resumes(tfrecords, tmp_path):
  model_dir = str(tmp_path / "run")
  result = subprocess.run(train_command(model_dir, tfrecords, "--eval_every=4"), cwd=REPO,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "trained steps 0..4" in result.stdout
  assert [step for step, _ in list_checkpoints(model_dir)] == [2, 4]
  generator, spec = restore_generator(model_dir)
  assert (spec["class_set"], spec["input_size"]) == ("19", [32, 32])
  assert "aux_logits" in generator.output
  with open(os.path.join(model_dir, "validation.json")) as f:
    assert json.load(f)["best"]["step"] == 4
  assert glob.glob(os.path.join(model_dir, "events.out.tfevents.*"))
  # The same command again finds the run finished and returns at once.
  events = glob.glob(os.path.join(model_dir, "*"))
  helpers.run_train_main(*train_command(model_dir, tfrecords, "--eval_every=4")[3:])
  assert sorted(glob.glob(os.path.join(model_dir, "*"))) == sorted(events)


def test_bad_data_exits_with_the_flag_and_the_problem(tfrecords, tmp_path):
  args = [f"--flagfile={CONFIG}", f"--model_dir={tmp_path}",
          *(f"--{k}={v}" for k, v in tfrecords.items())]
  with pytest.raises(SystemExit, match="--target_train=.*missing.*no file matches"):
    helpers.run_train_main(*args, f"--target_train={tmp_path}/missing-*.tfrecord")
  with pytest.raises(SystemExit, match="class set '11' reads 'camvid11'"):
    helpers.run_train_main(*args, "--class_set=11")
  with pytest.raises(SystemExit, match="unknown --method='fda'"):
    helpers.run_train_main(*args, "--method=fda")
  with pytest.raises(SystemExit, match="--model=deeplab_v2_resnet101_single: .*--levels=single"):
    helpers.run_train_main(*args, *helpers.TINY_TRAIN_FLAGS, "--model=deeplab_v2_resnet101_single")
  assert not list_checkpoints(str(tmp_path))


def test_a_truncated_shard_is_named_before_training(tfrecords, tmp_path):
  copy = tmp_path / "tfrecords"
  shutil.copytree(os.path.dirname(tfrecords["source_train"]), copy)
  shard = sorted(glob.glob(str(copy / "gta5-train-*.tfrecord")))[0]
  with open(shard, "r+b") as f:
    f.truncate(os.path.getsize(shard) - 100)
  with pytest.raises(SystemExit, match=r"(?s)--source_train=.*gta5-train-00000-of-00002"
                                       r"\.tfrecord.*truncated"):
    helpers.run_train_main(f"--flagfile={CONFIG}", f"--model_dir={tmp_path / 'run'}",
             *(f"--{k}={v}" for k, v in tfrecords.items()),
             f"--source_train={copy}/gta5-train-*.tfrecord", *helpers.TINY_TRAIN_FLAGS)
  assert not os.path.exists(tmp_path / "run" / "checkpoint")


def test_flags_do_not_clash_with_the_evaluation_commands():
  # Both commands name --model_dir, --model, --class_set, --input_size: the trainer keeps its
  # own FlagValues so that one process can import both.
  import tfdaseg.evaluate  # noqa: F401
  assert train.FLAGS["model_dir"] is not flags.FLAGS["model_dir"]


def kill_when(process: subprocess.Popen, condition: Callable[[], bool], delay: float = 0.0) -> None:
  """SIGKILLs `process` `delay` seconds after `condition()` first holds (polled every 2 ms)."""
  def watch():
    deadline = time.time() + 300
    while process.poll() is None and time.time() < deadline:
      if condition():
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        return
      time.sleep(0.002)
  threading.Thread(target=watch, daemon=True).start()


def checkpoint_tensors(prefix: str) -> dict[str, np.ndarray]:
  reader = tf.train.load_checkpoint(prefix)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def test_a_killed_run_resumes_to_the_bit_identical_weights_of_an_uninterrupted_run(tfrecords,
                                                                                   tmp_path):
  # The same command, --deterministic, killed with SIGKILL during a step and during a checkpoint
  # write, re-run each time: its last checkpoint holds exactly the tensors (weights, BN
  # statistics, optimiser slots, step) of the uninterrupted run's.
  def command(model_dir):
    return train_command(model_dir, tfrecords, "--deterministic", "--num_steps_stop=8",
                         "--image_summary_every=0", config=RESUMED_RUN)

  reference_dir, killed_dir = str(tmp_path / "reference"), str(tmp_path / "killed")
  reference = subprocess.Popen(command(reference_dir), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
  written = lambda step: os.path.exists(os.path.join(killed_dir, f"ckpt-{step}.index"))
  kill_points = {
      "during step 3": (lambda: written(2), 0.2),
      "during the write of checkpoint 4": (
          lambda: bool(glob.glob(os.path.join(killed_dir, "ckpt-4_temp*"))) or written(4), 0.0),
  }
  resumed_from = []
  for point, (condition, delay) in kill_points.items():
    resumed_from.append([step for step, _ in list_checkpoints(killed_dir)][-1:])
    process = subprocess.Popen(command(killed_dir), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    kill_when(process, condition, delay)
    _, errors = process.communicate(timeout=600)
    assert process.returncode == -signal.SIGKILL, f"not killed {point}: {errors[-3000:]}"
  final = subprocess.run(command(killed_dir), cwd=REPO, capture_output=True, text=True,
                         timeout=600)
  assert final.returncode == 0, final.stderr[-3000:]
  _, errors = reference.communicate(timeout=600)
  assert reference.returncode == 0, errors[-3000:]
  assert resumed_from[0] == [] and resumed_from[1] == [2], resumed_from
  expected = checkpoint_tensors(os.path.join(reference_dir, "ckpt-8"))
  actual = checkpoint_tensors(os.path.join(killed_dir, "ckpt-8"))
  assert sorted(actual) == sorted(expected)
  different = [name for name in expected if not np.array_equal(actual[name], expected[name])]
  assert not different, f"{len(different)} of {len(expected)} tensors differ: {different[:5]}"


def test_hrda_dacs_trains_and_evaluates_with_sliding_windows(tfrecords, tmp_path):
  # A tiny MiT in HRDA (its EMA teacher's pseudo-labels take the sliding detail windows), two
  # steps of DACS, then the test protocol of HRDA's configs: sliding windows over the image.
  model_dir = str(tmp_path / "run")
  mit = ('--model_options={"encoder_options": {"embed_dims": [4, 8, 12, 16], "num_heads": '
         '[1, 2, 3, 4], "depths": [1, 1, 1, 1]}, "embed_dim": 8}')
  flags_ = [f for f in helpers.TINY_TRAIN_FLAGS if not f.startswith(("--blocks", "--base_width"))]
  helpers.run_train_main(
      f"--flagfile={os.path.join(REPO, 'configs', 'gta5_to_cityscapes', 'hrda.cfg')}",
      f"--model_dir={model_dir}", *(f"--{k}={v}" for k, v in tfrecords.items()), *flags_,
      "--model=daformer_mit_b0", "--init_weights=", "--rare_class_sampling=false", mit,
      '--hrda_options={"detail_crop": 32, "attention_embed_dim": 8}', "--input_size=64,64",
      "--input_size_target=64,64", '--source_augment={"crop_size": [64, 64]}',
      '--target_augment={"crop_size": [64, 64], "pseudo_margins": [2, 16, 4, 4]}',
      "--num_steps_stop=2", "--image_summary_every=0")
  generator, _ = restore_generator(model_dir)
  assert {"detail_logits", "detail_box"} <= set(generator.output)
  assert generator.get_layer("hrda_detail_windows").random_crop
  helpers.run_cli(evaluate.main, ["tfdaseg-evaluate", f"--model_dir={model_dir}",
                                  f"--data={tfrecords['target_val']}", "--slide_window=48,48",
                                  "--slide_stride=16,16"])
  with open(os.path.join(model_dir, "eval", reports.METRICS_FILE)) as f:
    record = json.load(f)
  assert record["num_images"] == 3 and 0.0 <= record["miou"] <= 1.0
  assert record["options"]["slide_window"] == [48, 48]
