"""Transformer generators: a MiT encoder (B0..B5) with DAFormer's or SegFormer's head.

Registered as "daformer_mit_b0" ... "daformer_mit_b5" (DAFormer's network is
"daformer_mit_b5", configs/_base_/models/daformer_sepaspp_mitb5.py) and "segformer_mit_b0" ...
"segformer_mit_b5" (the all-MLP head of configs/_base_/models/segformer_b5.py, embedding 768;
DAFormer's Table 7 compares the two).

Outputs (dict): "logits" (stride 4, the head's output; the trainer upsamples them to the label
size as every generator's) and "features" (the encoder's last stage, stride 32: what DAFormer's
feature distance compares, mmseg/models/uda/dacs.py `calc_feat_dist`, `feat[-1]`).

Input: Caffe-preprocessed images (BGR minus the Caffe mean), as every tfdaseg generator takes;
the first layer turns them into the encoder's ImageNet normalisation (RGB, minus mean, over
std: DAFormer configs/_base_/datasets/uda_gta_to_cityscapes_512x512.py `img_norm_cfg`).
Any input size of at least 29x29 pixels works (stage 1's 8x8 spatial-reduction conv needs an 8x8
map).
"""

import dataclasses
from typing import Callable

import keras
from keras import ops

from tfdaseg.data.preprocessing import CAFFE_BGR_MEAN
from tfdaseg.models import outputs as keys
from tfdaseg.models.batch_norm import check_bn_mode
from tfdaseg.models.daformer_head import (DAFORMER_EMBED_DIM, DROPOUT, SEGFORMER_EMBED_DIM,
                                          daformer_head, segformer_head)
from tfdaseg.models.mix_transformer import DROP_PATH_RATE, MIT_CONFIGS, MitConfig, mix_transformer
from tfdaseg.models.registry import MODELS

# img_norm_cfg of DAFormer's dataset configs (RGB order).
IMAGENET_RGB_MEAN = (123.675, 116.28, 103.53)
IMAGENET_RGB_STD = (58.395, 57.12, 57.375)
# Head name -> (builder, default embedding width).
HEADS = {"daformer": (daformer_head, DAFORMER_EMBED_DIM),
         "segformer": (segformer_head, SEGFORMER_EMBED_DIM)}


@keras.saving.register_keras_serializable(package="tfdaseg")
class CaffeToImagenet(keras.layers.Layer):
  """Caffe-preprocessed BGR images -> RGB normalised by the ImageNet mean and std."""

  def call(self, images):
    rgb = ops.flip(images + ops.convert_to_tensor(CAFFE_BGR_MEAN, images.dtype), axis=-1)
    return ((rgb - ops.convert_to_tensor(IMAGENET_RGB_MEAN, images.dtype))
            / ops.convert_to_tensor(IMAGENET_RGB_STD, images.dtype))

  def compute_output_shape(self, input_shape):
    return input_shape


def _encoder_config(variant: str, encoder_options: dict | None) -> MitConfig:
  config = MIT_CONFIGS[variant]
  if not encoder_options:
    return config
  unknown = sorted(set(encoder_options) - {f.name for f in dataclasses.fields(MitConfig)})
  if unknown:
    raise ValueError(f"unknown encoder_options {unknown}; known: "
                     f"{', '.join(f.name for f in dataclasses.fields(MitConfig))}")
  # Lists from JSON (--model_options) become the config's tuples.
  return dataclasses.replace(config, **{k: tuple(v) if isinstance(v, (list, tuple)) else v
                                        for k, v in encoder_options.items()})


def mit_generator(name: str, variant: str, head: str, num_classes: int = 19,
                  bn_mode: str = "train", encoder_options: dict | None = None,
                  embed_dim: int | None = None, drop_path_rate: float = DROP_PATH_RATE,
                  dropout: float = DROPOUT, input_shape: tuple = (None, None, 3)) -> keras.Model:
  """Builds a MiT generator.

  Args:
    name: The model's (and registry) name; the head learning-rate multiplier is looked up by it.
    variant: "b0" ... "b5" (`MIT_CONFIGS`).
    head: "daformer" or "segformer".
    num_classes: Classes predicted.
    bn_mode: The head's BatchNorm in training; DAFormer and SegFormer train it ("train").
    encoder_options: Overrides of the variant's `MitConfig` fields (tiny test models).
    embed_dim: The head's per-stage embedding width (None: 256 for DAFormer, 768 for SegFormer;
      DAFormer's fusion and bottleneck have as many channels).
    drop_path_rate: The encoder's stochastic depth at its last block (0.1).
    dropout: Channel dropout before the classifier (0.1).
    input_shape: NHWC input shape without the batch axis; any height and width by default.

  Returns:
    A functional `keras.Model`: Caffe-preprocessed images -> {"logits", "features"}.
  """
  check_bn_mode(bn_mode)
  builder, default_embed_dim = HEADS[head]
  embed_dim = embed_dim or default_embed_dim
  inputs = keras.Input(shape=input_shape, name="image")
  stages = mix_transformer(CaffeToImagenet(name="imagenet_normalization")(inputs),
                           _encoder_config(variant, encoder_options), drop_path_rate)
  head_options = {"embed_dim": embed_dim, "dropout": dropout}
  if head == "daformer":
    head_options["channels"] = embed_dim
  logits = builder(stages, num_classes, bn_mode, **head_options)
  return keras.Model(inputs, {keys.LOGITS: logits, keys.FEATURES: stages[-1]}, name=name)


def _factory(variant: str, head: str) -> Callable[..., keras.Model]:
  name = f"{head}_mit_{variant}"

  def build(num_classes: int = 19, bn_mode: str = "train", encoder_options: dict | None = None,
            embed_dim: int | None = None, drop_path_rate: float = DROP_PATH_RATE,
            dropout: float = DROPOUT, input_shape: tuple = (None, None, 3)) -> keras.Model:
    return mit_generator(name, variant, head, num_classes, bn_mode, encoder_options, embed_dim,
                         drop_path_rate, dropout, input_shape)

  build.__name__ = name
  build.__doc__ = (f"MiT-{variant.upper()} with the {head} head: `mit_generator` with "
                   f"variant={variant!r}, head={head!r}.")
  return build


MIT_GENERATORS = [f"{head}_mit_{variant}" for head in HEADS for variant in MIT_CONFIGS]
for _head in HEADS:
  for _variant in MIT_CONFIGS:
    MODELS.register(f"{_head}_mit_{_variant}")(_factory(_variant, _head))
