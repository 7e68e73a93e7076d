"""Run set-up: generator initialisation from a .keras file, finished-run detection."""

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.models import tiny_generator
from tfdaseg.training import runner


def test_restore_from_copies_every_layer(tmp_path):
  source = tiny_generator(num_classes=3)
  path = str(tmp_path / "generator.keras")
  source.save(path)
  target = tiny_generator(num_classes=3)
  assert any(not np.array_equal(a, b) for a, b in zip(source.get_weights(), target.get_weights()))
  runner.restore_generator_weights(target, path)
  for a, b in zip(source.get_weights(), target.get_weights()):
    np.testing.assert_array_equal(a, b)


def test_restore_from_refuses_another_architecture(tmp_path):
  path = str(tmp_path / "wide.keras")
  tiny_generator(num_classes=3, base_width=8).save(path)
  with pytest.raises(ValueError, match=r"wide\.keras: .* layers missing or of another shape"):
    runner.restore_generator_weights(tiny_generator(num_classes=3), path)
  with pytest.raises(FileNotFoundError, match="--restore_from=.*nothing.keras"):
    runner.restore_generator_weights(tiny_generator(num_classes=3), str(tmp_path / "nothing.keras"))


def test_finished_step_reads_the_newest_checkpoint(tmp_path):
  assert runner.finished_step(str(tmp_path / "absent")) == 0
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(1.0)), str(tmp_path), 3,
                                       checkpoint_name="ckpt")
  for step in (2, 4):
    manager.save(checkpoint_number=step)
  assert runner.finished_step(str(tmp_path)) == 4
