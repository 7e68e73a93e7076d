"""The training loop: distribution, checkpoints and resume, NaN handling, TensorBoard output."""

import glob
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import training as helpers
from tfdaseg.data import labels
from tfdaseg.training import loop, validation
from tfdaseg.run_folder import list_checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_mirrored_matches_one_device_with_the_same_global_batch(tmp_path):
  one, _ = helpers.train_tiny(str(tmp_path / "one"), 2)
  mirrored, _ = helpers.train_tiny(
      str(tmp_path / "mirrored"), 2,
      strategy=tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"]))
  initial = helpers.weights(helpers.tiny_model("adaptsegnet"))
  assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(helpers.weights(one), initial))
  helpers.assert_weights_close(helpers.weights(mirrored), helpers.weights(one), atol=1e-5)


def nan_after_first_segment(fn: loop.DatasetFn, first_seed: int) -> loop.DatasetFn:
  """Images turn NaN from the second checkpoint segment on (its seed differs)."""
  def build(context, seed):
    poison = float("nan") if seed != first_seed else 0.0
    return fn(context, seed).map(lambda e: {
        s: {**b, "image": b["image"] + poison} for s, b in e.items()})
  return build


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path):
  model = helpers.tiny_model("adaptsegnet")
  data = nan_after_first_segment(helpers.dataset_fn(helpers.stream_arrays(), 2), 1234)
  config = loop.LoopConfig(num_steps_stop=6, save_pred_every=2, summary_every=0,
                           random_seed=1234)
  with pytest.raises(loop.NonFiniteLossError, match=r"step 3: non-finite loss.*ckpt-2"):
    loop.train(model, tf.distribute.OneDeviceStrategy("/cpu:0"), data, str(tmp_path), config)
  assert [step for step, _ in list_checkpoints(str(tmp_path))] == [2]
  restored = helpers.tiny_model("adaptsegnet", seed=1)
  tf.train.Checkpoint(**restored.trackables()).restore(
      str(tmp_path / "ckpt-2")).expect_partial()
  assert all(np.isfinite(w).all() for w in helpers.weights(restored))


def read_events(model_dir: str) -> dict[str, list]:
  tags = {}
  for path in glob.glob(os.path.join(model_dir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags.setdefault(value.tag, []).append((event.step, value))
  return tags


def test_tensorboard_scalars_and_prediction_grids(tmp_path):
  arrays = helpers.stream_arrays()
  data = helpers.dataset_fn(arrays, 2)
  batch = next(iter(data(tf.distribute.InputContext(), 0)))
  preview = loop.Preview({s: {"image": b["image"], "label": b["label"]} for s, b in batch.items()},
                         labels.CITYSCAPES_PALETTE[:helpers.NUM_CLASSES])
  model = helpers.tiny_model("adaptsegnet")
  config = loop.LoopConfig(num_steps_stop=2, save_pred_every=2, summary_every=1,
                           image_summary_every=2)
  loop.train(model, tf.distribute.OneDeviceStrategy("/cpu:0"), data, str(tmp_path), config,
             preview=preview, images_per_step=4)
  events = read_events(str(tmp_path))
  for tag in ("loss/generator_total", "loss/seg_main_source", "loss/adv_aux", "loss/d_main_target",
              "metric/d_accuracy_main", "lr/generator", "lr/generator_x10",
              "lr/main", "perf/images_per_s"):
    assert [step for step, _ in events[tag]] == [1, 2], tag
    assert events[tag][0][1].metadata.plugin_data.plugin_name == "scalars"
  lr = tf.make_ndarray(events["lr/generator"][1][1].tensor)
  assert float(lr) == pytest.approx(helpers.TINY_OPTIMIZER.learning_rate * (1 - 1 / 100) ** 0.9,
                                    rel=1e-5)
  (step, image), = events["predictions"]
  assert step == 2 and image.metadata.plugin_data.plugin_name == "images"
  width, height, png = tf.make_ndarray(image.tensor)
  grid = tf.io.decode_png(png).numpy()
  # Two rows per stream (batch 2), three panels (image, label, prediction) of 32x32.
  assert grid.shape == (4 * 32, 3 * 32, 3) and (int(width), int(height)) == (96, 128)


def test_validation_log_keeps_history_and_best(tmp_path):
  validation.record(str(tmp_path), 10, {"miou": 0.3, "per_class_iou": {"road": 0.3}})
  validation.record(str(tmp_path), 20, {"miou": 0.5, "per_class_iou": {"road": 0.5}})
  log = validation.record(str(tmp_path), 30, {"miou": 0.4, "per_class_iou": {"road": 0.4}})
  assert [row["step"] for row in log["history"]] == [10, 20, 30]
  assert log["best"]["step"] == 20
  with open(tmp_path / validation.VALIDATION_LOG) as f:
    assert json.load(f) == log


def free_ports(count: int) -> list[int]:
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def test_two_workers_train_identically_and_only_the_chief_writes(tmp_path):
  cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
  model_dir = str(tmp_path / "run")
  processes = []
  for index in range(2):
    scratch = tmp_path / f"tmp{index}"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch), TF_CPP_MIN_LOG_LEVEL="2",
               TF_CONFIG=json.dumps({"cluster": cluster,
                                     "task": {"type": "worker", "index": index}}))
    processes.append(subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.training", f"--model_dir={model_dir}", "--steps=2",
         "--strategy=multi_worker", f"--weights_out={tmp_path}/weights{index}.npz"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  for process in processes:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
  chief, worker = (np.load(tmp_path / f"weights{i}.npz") for i in range(2))
  assert all(np.array_equal(chief[k], worker[k]) for k in chief.files)
  assert [step for step, _ in list_checkpoints(model_dir)] == [2]
  assert len(glob.glob(os.path.join(model_dir, "events.out.tfevents.*"))) == 1
  assert not os.listdir(tmp_path / "tmp1"), "the worker's checkpoint folder was not deleted"


def test_keep_checkpoints_zero_keeps_every_checkpoint(tmp_path):
  # ADVENT's protocol scores every snapshot (TEST.MODE 'best'), more than the default 5 kept.
  helpers.train_tiny(str(tmp_path), 6, save_every=1, keep_checkpoints=0)
  assert [step for step, _ in list_checkpoints(str(tmp_path))] == [1, 2, 3, 4, 5, 6]
  assert len(glob.glob(str(tmp_path / "ckpt-*.index"))) == 6
