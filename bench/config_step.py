"""A training step built from a config file as `tfdaseg.train` builds it, on in-memory batches.

Shared by bench/memory.py and bench/train_step.py's DAFormer line: the flagfile is parsed by the
trainer's own flags (`tfdaseg.training.config`), and the generator, the method's networks and the
optimisers come from the same calls as in `tfdaseg.training.runner.run`; only the data is random
and no initial weights are read (the config's `--init_weights` is a path on the training
machine, and a step costs the same whatever the weights).
"""

import os

import numpy as np
from absl import flags

# The repository root: configs are named relative to it.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAFORMER_CONFIG = "configs/gta5_to_cityscapes/daformer.cfg"
HRDA_CONFIG = "configs/gta5_to_cityscapes/hrda.cfg"


def hrda_overrides(size: tuple[int, int]) -> list[str]:
  """hrda.cfg's detail window scaled to a bench crop of `size` (width, height).

  HRDA's detail window is half its 1024x1024 crop per side (512); on smaller bench crops it
  keeps that share, rounded down to HRDA's crop_coord_divisible 8.

  Args:
    size: (width, height) of the crop the step trains on.

  Returns:
    The `--hrda_options` flag.
  """
  width, height = size
  crop = [max(8, height // 2 // 8 * 8), max(8, width // 2 // 8 * 8)]
  return [f'--hrda_options={{"detail_crop": [{crop[0]}, {crop[1]}]}}']


def daformer_overrides(variant: str = "b5", precision: str = "none", recompute: bool = False,
                       batch: int | None = None, xla: str | None = None) -> list[str]:
  """Flags on top of `DAFORMER_CONFIG` for one bench configuration.

  Args:
    variant: MiT variant, "b0" ... "b5" (the config's is b5).
    precision: A `--mixed_precision` value.
    recompute: `MitConfig.recompute` (through `--model_options`, as a user sets it).
    batch: Images per stream (None: the config's 2 + 2).
    xla: A `--xla` value (None: the trainer's default).

  Returns:
    The flags.
  """
  overrides = [f"--model=daformer_mit_{variant}", f"--mixed_precision={precision}"]
  if recompute:
    overrides.append('--model_options={"encoder_options": {"recompute": true}}')
  if batch is not None:
    overrides.append(f"--batch_size={batch}")
  if xla is not None:
    overrides.append(f"--xla={xla}")
  return overrides


def train_config(flagfile: str, overrides: list[str]):
  """The `TrainConfig` that `tfdaseg.train --flagfile=FLAGFILE OVERRIDES...` would run.

  Args:
    flagfile: A config, relative to the repository root.
    overrides: Further flags.

  Returns:
    The parsed `tfdaseg.training.config.TrainConfig`.
  """
  from tfdaseg.training import config as train_config_lib  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  train_config_lib.define_flags(fv)
  fv(["config_step", f"--flagfile={os.path.join(ROOT, flagfile)}", *overrides])
  return train_config_lib.TrainConfig.from_flags(fv)


def random_element(config, size: tuple[int, int], seed: int = 0) -> dict:
  """One batch per stream of the config, random images and labels at `size`.

  Args:
    config: A `TrainConfig`.
    size: (width, height) of every stream's images (the crop the step trains on).
    seed: Seed of the draws.

  Returns:
    Stream name -> {"image": float32 [B, H, W, 3] (Caffe scale), "label": int32 [B, H, W],
    and the method's stream features}.
  """
  from tfdaseg.data import pipeline  # pylint: disable=g-import-not-at-top
  width, height = size
  rng = np.random.default_rng(seed)
  classes = config.model_class_set.num_classes
  features = config.build_method().stream_features()
  batches = {}
  for name, stream in config.streams.items():
    image = rng.normal(0, 50, (stream.batch_size, height, width, 3)).astype(np.float32)
    batches[name] = {"image": image, **pipeline.batch_features(image, features.get(name, ())),
                     "label": rng.integers(0, classes, (stream.batch_size, height, width)).astype(
                         np.int32)}
  return batches


def build_step(config, strategy=None):
  """Builds the trainer's model and step for `config`, as `tfdaseg.training.runner.run` does.

  Call before TensorFlow has built anything else (the precision policy is set here).

  Args:
    config: A `TrainConfig`.
    strategy: A `tf.distribute.Strategy` (None: the config's `--strategy`).

  Returns:
    (model, strategy, step_fn), `step_fn(distributed iterator) -> logs` from
    `tfdaseg.training.loop.distributed_step`.
  """
  # pylint: disable=g-import-not-at-top
  import keras
  from tfdaseg import models
  from tfdaseg.training import loop
  from tfdaseg.training.model import build_training_model
  from tfdaseg.training.precision import set_precision
  from tfdaseg.training.strategies import build_strategy, resolve_xla
  # pylint: enable=g-import-not-at-top
  runtime = config.runtime
  set_precision(runtime.mixed_precision)
  keras.utils.set_random_seed(config.loop.random_seed)
  strategy = strategy or build_strategy(runtime.strategy)
  with strategy.scope():
    generator = models.build(config.model.model, **config.generator_options())
    model = build_training_model(
        generator, config.build_method(), num_classes=config.model_class_set.num_classes,
        head_variables=models.split_head_variables(generator)[1],
        head_lr_multiplier=models.head_learning_rate_multiplier(generator),
        no_decay_variables=models.no_decay_variables(generator),
        config=config.optimization, precision=runtime.mixed_precision,
        jit_compile=resolve_xla(runtime.xla, strategy), random_seed=config.loop.random_seed)
  return model, strategy, loop.distributed_step(model, strategy, iter_size=config.loop.iter_size)


def iterator(strategy, element: dict):
  """A distributed iterator repeating `element` (the same batch every step)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return iter(strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors(element).repeat()))
