"""TS3: the strong/weak split, the L-Net's coarse maps, and `python -m tfdaseg.train` +
`tfdaseg.evaluate` on a miniature VOC."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import evaluation as eval_helpers
from tests.helpers import training as helpers
from tfdaseg import evaluate, methods
from tfdaseg.methods.base import SOURCE, StepContext
from tfdaseg.methods.ts3 import LNET, Ts3Config, strong_class_ids
from tfdaseg.run_folder import list_checkpoints
from tfdaseg.utils.config_fields import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_strong_classes_from_the_fraction_or_the_list():
  assert strong_class_ids(Ts3Config(strong_fraction=0.5), 21) == tuple(range(1, 11))
  assert strong_class_ids(Ts3Config(strong_fraction=0.0), 21) == ()
  assert strong_class_ids(Ts3Config(strong_classes=(7, 3)), 21) == (3, 7)
  with pytest.raises(ConfigError, match="--strong_classes: \\[0\\]"):
    strong_class_ids(Ts3Config(strong_classes=(0,)), 21)


def _context(method, label: np.ndarray, maps: np.ndarray) -> StepContext:
  """A step whose L-Net returns `maps` [1, 2, 2, C + 1] whatever the features."""
  networks = {"generator": lambda images, training: {"features": tf.zeros([1, 2, 2, 4])},
              LNET: lambda features, training: tf.constant(maps, tf.float32)}
  batch = {SOURCE: {"image": tf.zeros([1, 2, 2, 3]), "label": tf.constant(label[None])}}
  return StepContext(batch, networks, 3, tf.constant(0, tf.int64), tf.constant([0, 0]))


# The quality against the label [[0, 2], [2, 2]]: (agreeing / covered, covered / labelled).
@pytest.mark.parametrize("strong_fraction, expected, quality", [
    (0.5, [[0, 2], [255, 2]], (1.0, 0.75)),  # the foreground branch decides object vs background
    (0.0, [[0, 2], [0, 2]], (0.75, 1.0)),    # no strong class: the CAM decides
])
def test_coarse_map_of_a_weak_image(strong_fraction, expected, quality):
  method = methods.build("ts3", num_classes=3, strong_fraction=strong_fraction)
  # Classes: 0 background, 1 strong (at 0.5), 2 weak; the image shows class 2 only.
  label = np.array([[0, 2], [2, 2]], np.int32)
  cam1 = [[9.0, 9.0], [9.0, 9.0]]    # high, but class 1 is absent from the image
  cam2 = [[0.0, 1.0], [0.1, 0.5]]    # normalised: itself (peak 1)
  foreground = [[-5.0, 5.0], [5.0, 5.0]]
  maps = np.stack([np.zeros((2, 2)), cam1, cam2, foreground], axis=-1)[None]
  ctx = _context(method, label, maps)
  np.testing.assert_array_equal(method.coarse_labels(ctx)[0].numpy(), expected)
  np.testing.assert_allclose([float(v) for v in method.coarse_map_quality(ctx)], quality)


def test_ts3_trains_and_evaluates_through_the_cli(tmp_path):
  voc = helpers.write_voc_tfrecords(str(tmp_path / "data"))
  model_dir = str(tmp_path / "run")
  helpers.run_train_main(
      f"--flagfile={os.path.join(REPO, 'configs', 'voc', 'ts3_strong50.cfg')}",
      f"--model_dir={model_dir}", f"--source_train={voc['train']}",
      f"--target_val={voc['val']}", "--coarse_warmup_steps=1", "--discriminator_base_filters=4",
      "--blocks=1,1,1,1", "--base_width=4", "--bn_mode=train", "--input_size=32,32",
      "--input_size_target=32,32", "--batch_size=2", "--num_steps=20", "--num_steps_stop=2",
      "--save_pred_every=2", "--summary_every=1", "--image_summary_every=0",
      "--strategy=one_device")
  assert [step for step, _ in list_checkpoints(model_dir)] == [2]
  eval_helpers.run_cli(evaluate.main, ["tfdaseg-evaluate", f"--model_dir={model_dir}",
                                       f"--data={voc['val']}", "--input_size=32,32"])
  with open(os.path.join(model_dir, "eval", "metrics.json")) as f:
    assert json.load(f)["num_images"] == 1
