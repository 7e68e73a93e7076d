"""Tiny trainers, in-memory and TFRecord data, and a worker process for the training tests.

Run as `python -m tests.helpers.training --model_dir=... --steps=N [--strategy=multi_worker]`
it trains the tiny model in its own process (the multi-worker test).
"""

import argparse
import dataclasses
import os

import numpy as np
import tensorflow as tf

from tfdaseg import methods, models
from tfdaseg.training import loop
from tfdaseg.training.model import (DomainAdaptationModel, OptimizationConfig,
                                    build_training_model)
from tests.helpers.cli import run_cli
from tests.helpers.models import tiny_generator

NUM_CLASSES = 3
SIZE = 32
# Large enough rates that a few steps move the weights measurably.
TINY_OPTIMIZER = OptimizationConfig(learning_rate=2.5e-4, num_steps=100)
# Method hyper-parameters of the tiny models, where the method has them.
TINY_METHOD_OPTIONS = {"discriminator_base_filters": 4, "learning_rate_d": 1e-3}


def tiny_method(method: str = "adaptsegnet", **options) -> methods.Method:
  """A method over NUM_CLASSES with tiny discriminators (where it has them) and `options`."""
  fields = {f.name for f in dataclasses.fields(methods.METHODS.get(method).config_class)}
  tiny = {k: v for k, v in TINY_METHOD_OPTIONS.items() if k in fields}
  return methods.build(method, num_classes=NUM_CLASSES, **{**tiny, **options})


def stream_arrays(count: int = 8, size: int = SIZE, num_classes: int = NUM_CLASSES,
                  seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
  """Random source/target examples shaped like the pipeline's (unit-scale images), labels with
  some ignored (255) pixels; the target's labels are all 255 (unlabelled)."""
  rng = np.random.default_rng(seed)
  arrays = {}
  for stream in (methods.SOURCE, methods.TARGET):
    label = rng.integers(0, num_classes, (count, size, size)).astype(np.int32)
    if stream == methods.SOURCE:
      label[:, :2, :] = 255
    else:
      label[:] = 255
    arrays[stream] = {
        "image": rng.normal(0.0, 1.0, (count, size, size, 3)).astype(np.float32),
        "label": label,
        "filename": np.array([f"{stream}-{i}" for i in range(count)]),
    }
  return arrays


def dataset_fn(arrays: dict, global_batch_size: int, streams=None) -> loop.DatasetFn:
  """A `loop.DatasetFn` over in-memory arrays: each stream repeats and is shuffled with the seed
  (like the pipeline's training mode), batched to the per-replica batch size."""
  streams = streams or tuple(arrays)

  def build(context: tf.distribute.InputContext, seed: int) -> tf.data.Dataset:
    batch = context.get_per_replica_batch_size(global_batch_size)
    per_stream = {}
    for index, stream in enumerate(streams):
      ds = tf.data.Dataset.from_tensor_slices(arrays[stream])
      ds = ds.shard(context.num_input_pipelines, context.input_pipeline_id)
      ds = ds.shuffle(64, seed=seed + index).repeat().batch(batch, drop_remainder=True)
      per_stream[stream] = ds
    return tf.data.Dataset.zip(per_stream)

  return build


def tiny_model(method: str = "adaptsegnet", *, generator: str = "deeplab_v2_resnet101_multi",
               seed: int = 0, precision: str = "none", jit_compile: bool = False,
               optimizer: OptimizationConfig = TINY_OPTIMIZER, random_seed: int | None = None,
               **method_options) -> DomainAdaptationModel:
  """A tiny trainable model (call inside the strategy's scope): no BatchNorm statistics to
  disagree between replicas (frozen), seeded weights.

  Args:
    method: Method name.
    generator: Generator registry name.
    seed: Weight-initialisation seed (also the in-step random draws' unless random_seed).
    precision: --mixed_precision value (set the Keras policy before calling).
    jit_compile: XLA for the loss-and-gradient core.
    optimizer: Optimiser hyper-parameters.
    random_seed: Base of the in-step random draws (default `seed`).
    **method_options: The method's hyper-parameters over `TINY_METHOD_OPTIONS`.
  """
  tf.keras.utils.set_random_seed(seed)
  net = tiny_generator(generator, num_classes=NUM_CLASSES, bn_mode="frozen")
  return build_training_model(net, tiny_method(method, **method_options),
                              num_classes=NUM_CLASSES,
                              head_variables=models.split_head_variables(net)[1],
                              head_lr_multiplier=models.head_learning_rate_multiplier(net),
                              no_decay_variables=models.no_decay_variables(net),
                              config=optimizer, precision=precision, jit_compile=jit_compile,
                              random_seed=seed if random_seed is None else random_seed)


def weights(model: DomainAdaptationModel) -> list[np.ndarray]:
  """Every generator and method-network weight, in a fixed order."""
  networks = [model.generator] + [model.networks[k] for k in sorted(model.networks)]
  return [np.array(w) for net in networks for w in net.get_weights()]


def assert_weights_close(actual: list, expected: list, atol: float = 1e-6) -> None:
  """Asserts two `weights` lists agree elementwise."""
  assert len(actual) == len(expected)
  for a, e in zip(actual, expected):
    np.testing.assert_allclose(a, e, atol=atol, rtol=1e-5)


def write_tiny_tfrecords(directory: str) -> dict[str, str]:
  """Converts miniature GTA5 and Cityscapes (train unlabelled, val labelled) with the real
  converters into `directory`; returns the flag -> file pattern of each split."""
  from tests.helpers import datasets
  from tfdaseg.data.converters import CONVERTERS, ConverterOptions
  from tfdaseg.data.tfrecord_writer import WriteOptions, write_split

  jobs = {"source_train": ("gta5", "train", datasets.write_gta5, False),
          "target_train": ("cityscapes", "train", datasets.write_cityscapes, True),
          "target_val": ("cityscapes", "val", datasets.write_cityscapes, False)}
  patterns = {}
  for flag, (name, split, writer, unlabeled) in jobs.items():
    root = os.path.join(directory, "raw", name)
    writer(root) if name == "gta5" else writer(root, split)
    converter = CONVERTERS.get(name)(root, ConverterOptions(unlabeled=unlabeled))
    output = os.path.join(directory, "tfrecords")
    write_split(converter, name, split, output, WriteOptions(num_shards=2, num_workers=0))
    patterns[flag] = os.path.join(output, f"{name}-{split}-*.tfrecord")
  return patterns


# Flags that make `python -m tfdaseg.train` tiny (with write_tiny_tfrecords' patterns).
TINY_TRAIN_FLAGS = [
    "--blocks=1,1,1,1", "--base_width=4", "--bn_mode=train", "--discriminator_base_filters=4",
    "--input_size=32,32", "--input_size_target=32,32", "--num_steps=20", "--num_steps_stop=4",
    "--save_pred_every=2", "--summary_every=1", "--image_summary_every=2", "--strategy=one_device",
    "--learning_rate=2.5e-4", "--learning_rate_d=1e-3",
]


def run_train_main(*argv: str) -> None:
  """Runs `python -m tfdaseg.train *argv` in this process (its own flags, reset afterwards)."""
  from tfdaseg import train
  run_cli(train.main, ["train", *argv], train.FLAGS)


def write_voc_tfrecords(directory: str) -> dict[str, str]:
  """Converts miniature VOC train (2 images) and val (1); returns their patterns by split."""
  from tests.helpers import datasets
  from tfdaseg.data.converters import CONVERTERS
  from tfdaseg.data.tfrecord_writer import WriteOptions, write_split

  minis = datasets.write_voc(os.path.join(directory, "raw"))
  converter = CONVERTERS.get("voc")(minis["train"].root)
  output = os.path.join(directory, "voc")
  patterns = {}
  for split in ("train", "val"):
    write_split(converter, "voc", split, output, WriteOptions(num_shards=1, num_workers=0))
    patterns[split] = os.path.join(output, f"voc-{split}-*.tfrecord")
  return patterns


def write_voc_and_transformed_copy(directory: str, chain: str = "gamma=2.2,hue_rotation=90"
                                   ) -> dict[str, str]:
  """`write_voc_tfrecords` plus the splits' transformed copies (tools/make_transformed_dataset.py):
  the patterns "train", "val", "copy_train", "copy_val"."""
  from tools.make_transformed_dataset import make_transformed_split

  patterns = write_voc_tfrecords(directory)
  copy = os.path.join(directory, "copy")
  for split in ("train", "val"):
    make_transformed_split(patterns[split], copy, chain, num_workers=0)
    patterns[f"copy_{split}"] = os.path.join(copy, f"voc_transformed-{split}-*.tfrecord")
  return patterns


def train_tiny(model_dir: str, steps: int, *, strategy: tf.distribute.Strategy | None = None,
               save_every: int = 2, global_batch: int = 2,
               **loop_options) -> tuple[DomainAdaptationModel, loop.TrainResult]:
  """Trains a tiny AdaptSegNet model on in-memory data to `steps` (resuming from `model_dir`).

  Args:
    model_dir: The run folder.
    steps: num_steps_stop.
    strategy: Default one CPU device.
    save_every: Checkpoint period.
    global_batch: Images per stream and step.
    **loop_options: Further `loop.LoopConfig` fields.

  Returns:
    (model, result).
  """
  strategy = strategy or tf.distribute.OneDeviceStrategy("/cpu:0")
  with strategy.scope():
    model = tiny_model("adaptsegnet")
  config = loop.LoopConfig(num_steps_stop=steps, save_pred_every=save_every,
                           **{"summary_every": 0, **loop_options})
  return model, loop.train(model, strategy, dataset_fn(stream_arrays(), global_batch), model_dir,
                           config)


def _worker_main() -> None:
  """A training process for the multi-worker test (run with `-m`)."""
  parser = argparse.ArgumentParser()
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--steps", type=int, required=True)
  parser.add_argument("--strategy", default="one_device", choices=["one_device", "multi_worker"])
  parser.add_argument("--weights_out")
  args = parser.parse_args()
  strategy = (tf.distribute.MultiWorkerMirroredStrategy() if args.strategy == "multi_worker"
              else tf.distribute.OneDeviceStrategy("/cpu:0"))
  model, _ = train_tiny(args.model_dir, args.steps, strategy=strategy, summary_every=1)
  if args.weights_out:
    np.savez(args.weights_out, *weights(model))


if __name__ == "__main__":
  _worker_main()
