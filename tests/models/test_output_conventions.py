"""Each generator family's resize and CE-averaging conventions."""

import keras
import pytest

import tfdaseg.models
from tests.helpers import models as model_helpers
from tfdaseg.models.output_conventions import (DEEPLAB, GENERATOR_CONVENTIONS, MMSEG,
                                               output_conventions)

GENERATORS = [name for name in tfdaseg.models.MODELS.names()
              if not name.endswith("discriminator")]


def test_every_registered_generator_has_its_family_conventions():
  assert sorted(GENERATOR_CONVENTIONS) == sorted(GENERATORS)
  for name in GENERATORS:
    assert GENERATOR_CONVENTIONS[name] == (MMSEG if "_mit_" in name else DEEPLAB), name


@pytest.mark.parametrize("name,expected", [("deeplab_v2_resnet101_multi", DEEPLAB),
                                           ("daformer_mit_b5", MMSEG), ("my_generator", DEEPLAB)])
def test_conventions_follow_the_model_name(name, expected):
  inputs = keras.Input((8, 8, 3))
  assert output_conventions(keras.Model(inputs, inputs, name=name)) == expected


def test_built_generators_and_their_hrda_wrap_keep_the_conventions():
  assert output_conventions(model_helpers.tiny_generator("deeplab_v2_resnet101_multi")) == DEEPLAB
  hrda = tfdaseg.models.build("daformer_mit_b0", num_classes=3, embed_dim=16,
                              hrda={"detail_crop": [32, 32], "attention_embed_dim": 16})
  assert output_conventions(hrda) == MMSEG
