"""A training run from a `TrainConfig`: checks, strategy, models, data, then the loop."""

import os

import keras
import tensorflow as tf
from absl import logging

from tfdaseg import models
from tfdaseg.training import inputs, labelled_target, loop
from tfdaseg.run_folder import list_checkpoints, write_generator_spec
from tfdaseg.training.config import ConfigError, ModelConfig, TrainConfig, validate
from tfdaseg.training.determinism import enable_determinism
from tfdaseg.training.model import build_training_model
from tfdaseg.training.precision import set_precision
from tfdaseg.training.strategies import build_strategy, is_chief, resolve_xla
from tfdaseg.training.validation import Validator


def restore_generator_weights(generator: keras.Model, path: str) -> None:
  """Copies the weights of the `.keras` generator at `path` into `generator`, layer by layer.

  Raises:
    ValueError: naming the file, when a layer is missing or its weights do not fit.
  """
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"--restore_from={path}: no such file")
  source = keras.models.load_model(path, compile=False)
  by_name = {layer.name: layer for layer in source.layers}
  problems = []
  for layer in generator.layers:
    if not layer.weights:
      continue
    other = by_name.get(layer.name)
    shapes = [tuple(w.shape) for w in layer.weights]
    if other is None or [tuple(w.shape) for w in other.weights] != shapes:
      problems.append(layer.name)
      continue
    for mine, theirs in zip(layer.weights, other.weights):
      mine.assign(theirs.value)
  if problems:
    raise ValueError(f"--restore_from={path}: {len(problems)} layers missing or of another "
                     f"shape, e.g. {problems[:5]} (was it built with the same --model, "
                     "--blocks, --base_width and class count?)")
  logging.info("generator weights restored from %s", path)


def initialise_generator(generator: keras.Model, config: ModelConfig) -> None:
  """Applies --init_weights (ImageNet backbone) or --restore_from (whole generator)."""
  if config.restore_from:
    restore_generator_weights(generator, config.restore_from)
  elif config.init_weights:
    models.load_imagenet_weights(generator, config.init_weights, config.model)


def finished_step(model_dir: str) -> int:
  """The step of the newest checkpoint in `model_dir` (0 when there is none)."""
  found = list_checkpoints(model_dir) if tf.io.gfile.isdir(model_dir) else []
  return found[-1][0] if found else 0


def run(config: TrainConfig) -> loop.TrainResult:
  """Trains as `config` says, resuming from `config.model_dir` when it holds checkpoints.

  Raises:
    ConfigError, inputs.DataError: for settings or data that cannot work (before training).
    loop.NonFiniteLossError: when a loss becomes NaN or infinite.
  """
  validate(config)
  done = finished_step(config.model_dir)
  if done >= config.loop.num_steps_stop:
    logging.info("%s already holds step %d (num_steps_stop %d): nothing to do", config.model_dir,
                 done, config.loop.num_steps_stop)
    return loop.TrainResult(done, done, 0.0, {})
  runtime = config.runtime
  if runtime.deterministic:
    enable_determinism()
  set_precision(runtime.mixed_precision)
  keras.utils.set_random_seed(config.loop.random_seed)
  strategy = build_strategy(runtime.strategy)
  replicas = strategy.num_replicas_in_sync
  for stream in config.streams.values():
    if stream.batch_size % replicas:
      raise ConfigError(f"the {stream.name} stream's batch of {stream.batch_size} is not "
                        f"divisible by the {replicas} replicas of --strategy={runtime.strategy}")
  method = config.build_method()
  inputs.check_streams(config.streams)
  streams = labelled_target.apply(config.streams, config.labelled_target,
                                  seed=config.loop.random_seed, model_dir=config.model_dir,
                                  write=is_chief(strategy))
  streams = inputs.apply_rare_class_sampling(streams, config.rare_class_sampling)
  streams = inputs.apply_stream_features(streams, method.stream_features())
  validator = None
  if config.loop.eval_every:
    validator = Validator(
        inputs.validation_dataset_fn(config.data.target_val, config.target_classes,
                                     config.target_size, config.data.interpolation),
        config.target_classes, config.model_class_set)
  with strategy.scope():
    try:
      generator = models.build(config.model.model, **config.generator_options())
      initialise_generator(generator, config.model)
      model = build_training_model(
          generator, method, num_classes=config.model_class_set.num_classes,
          head_variables=models.split_head_variables(generator)[1],
          head_lr_multiplier=models.head_learning_rate_multiplier(generator),
          no_decay_variables=models.no_decay_variables(generator),
          config=config.optimization, precision=runtime.mixed_precision,
          jit_compile=resolve_xla(runtime.xla, strategy), random_seed=config.loop.random_seed)
    except (TypeError, ValueError) as e:
      # Model options, initial weights or the method's needs that do not fit the model.
      raise ConfigError(f"--model={config.model.model}: {e}") from None
  if is_chief(strategy):
    write_generator_spec(config.model_dir, generator, config.data.class_set, config.target_size,
                         inference_network=method.inference_network)
  dataset_fn = inputs.training_dataset_fn(streams, config.data.interpolation)
  preview = None
  if config.loop.image_summary_every:
    preview = inputs.preview(dataset_fn, config.model_class_set.palette, config.loop.random_seed)
  logging.info("%s with %s on %d replica(s), xla=%s, precision=%s, model_dir=%s",
               config.method_name, config.model.model, replicas, model.jit_compile_step,
               runtime.mixed_precision, os.path.abspath(config.model_dir))
  images_per_step = config.loop.iter_size * sum(s.batch_size for s in streams.values())
  return loop.train(model, strategy, dataset_fn, config.model_dir, config.loop,
                    validator=validator, preview=preview, images_per_step=images_per_step)
