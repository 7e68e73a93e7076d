"""The heads' learning-rate multiplier: a property of each generator, kept by `.keras` files."""

import keras
import pytest

import tfdaseg.models
from tests.helpers import models as model_helpers
from tfdaseg.models.head_variables import HEAD_LEARNING_RATE_MULTIPLIERS

# The reference's optim_parameters: 10x heads for the DeepLab-v2 ResNets, one group for VGG-16;
# DAFormer's decode head at 10x.
EXPECTED = {"deeplab_v2_resnet101_multi": 10.0, "deeplab_v2_resnet101_single": 10.0,
            "deeplab_v2_vgg16": 1.0, "daformer_mit_b0": 10.0, "segformer_mit_b0": 10.0}
GENERATORS = [name for name in tfdaseg.models.MODELS.names()
              if not name.endswith("discriminator")]


@pytest.mark.parametrize("name", sorted(model_helpers.TINY_GENERATOR_OPTIONS))
def test_multiplier_survives_keras_files(name, tmp_path):
  model = model_helpers.tiny_generator(name)
  assert tfdaseg.models.head_learning_rate_multiplier(model) == EXPECTED[name]
  path = str(tmp_path / "generator.keras")
  model.save(path)
  assert tfdaseg.models.head_learning_rate_multiplier(keras.models.load_model(path)) == (
      EXPECTED[name])


def test_every_generator_has_a_multiplier():
  assert sorted(HEAD_LEARNING_RATE_MULTIPLIERS) == GENERATORS
  assert set(model_helpers.TINY_GENERATOR_OPTIONS) <= set(GENERATORS)


def test_other_models_have_none():
  discriminator = tfdaseg.models.build("output_space_discriminator", num_channels=3,
                                       base_filters=4)
  with pytest.raises(ValueError, match="'output_space_discriminator' has no head learning-rate "
                                       "multiplier; known generators: daformer_mit_b0"):
    tfdaseg.models.head_learning_rate_multiplier(discriminator)
