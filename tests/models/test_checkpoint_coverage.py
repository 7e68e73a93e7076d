"""Every registered model's weights must all reach a tf.train.Checkpoint (resume, evaluation and
export restore from checkpoints; a weight that is not tracked would silently stay random)."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdaseg.models
from tests.helpers.models import TINY_GENERATOR_OPTIONS, random_image, tiny_generator

_DISCRIMINATORS = {
    "output_space_discriminator": {"num_channels": 3, "base_filters": 4},
    "feature_discriminator": {"num_channels": 8, "base_filters": 4},
}


def _restored_copy_matches(model: keras.Model, fresh: keras.Model, tmp_path) -> None:
  path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
  assert len(fresh.weights) == len(model.weights)
  tf.train.Checkpoint(model=fresh).read(path).assert_consumed()
  for saved, restored in zip(model.weights, fresh.weights):
    np.testing.assert_array_equal(restored.numpy(), saved.numpy(), err_msg=saved.path)


@pytest.mark.parametrize("bn_mode", ["train", "reference"])
@pytest.mark.parametrize("name", sorted(TINY_GENERATOR_OPTIONS))
def test_generator_checkpoint_holds_every_weight(name, bn_mode, tmp_path):
  # Every branch of the DeepLab-v2 heads, where a generator has them.
  options = ({"aspp_compat": "full"}
             if "aspp_compat" in inspect.signature(tfdaseg.models.MODELS.get(name)).parameters
             else {})
  keras.utils.set_random_seed(0)
  model = tiny_generator(name, bn_mode=bn_mode, **options)
  model(random_image(33, 33))
  keras.utils.set_random_seed(1)
  fresh = tiny_generator(name, bn_mode=bn_mode, **options)
  fresh(random_image(33, 33))
  _restored_copy_matches(model, fresh, tmp_path)


@pytest.mark.parametrize("name", sorted(_DISCRIMINATORS))
def test_discriminator_checkpoint_holds_every_weight(name, tmp_path):
  options = _DISCRIMINATORS[name]
  inputs = np.zeros((1, 64, 64, options["num_channels"]), "float32")
  keras.utils.set_random_seed(0)
  model = tfdaseg.models.build(name, **options)
  model(inputs)
  keras.utils.set_random_seed(1)
  fresh = tfdaseg.models.build(name, **options)
  fresh(inputs)
  _restored_copy_matches(model, fresh, tmp_path)
