"""Seconds per training step of multi-level AdaptSegNet (the reference's main experiment).

DeepLab-v2 ResNet-101 at full depth (frozen BatchNorm, as the reference), 19 classes, both
discriminators, source and target at 320x160, batch 1: the exact step `tfdaseg.train` runs
(`tfdaseg.training.loop.distributed_step`), on in-memory random batches so that only the step is
timed. For each configuration (precision x XLA x replicas) the model is built, the step traced
and warmed up, then the median of the timed steps is reported.

Replicas 2 are two logical devices of this machine's CPU (MirroredStrategy), or two GPUs.
With --torch_python (an interpreter that has torch, e.g. a separate venv with
`pip install torch==2.13.0 numpy`), the PyTorch reference step (`bench/torch_reference_step.py`)
is timed in the same run, before the TensorFlow configurations, and every record gets the
reference's median and `speedup_vs_torch` (images/s over the reference's): the issue's goal is
>= 1.2 in fp32 and >= 1.6 in bf16 (one device, XLA off).

Each configuration also times the DACS step (`--methods`, default adaptsegnet,dacs: the same
generator and batch; DACS adds the teacher's forward pass, ClassMix, the strong augmentation and
the student's forward and backward pass on the mixed images) and reports
`relative_to_adaptsegnet`, its median over AdaptSegNet's median in the same run.

Prints progress, then LAST one JSON object per configuration and method:
  {"bench": "train_step", "method": "adaptsegnet", "model": "deeplab_v2_resnet101_multi",
   "size": "320x160", "batch": 1, "precision": "fp32", "xla": false, "replicas": 1,
   "s_per_step_median": ...}

Usage: python bench/train_step.py [--quick] [--steps=5] [--warmup=2] [--torch_python=PYTHON]
           [--methods=adaptsegnet,dacs]
  --quick: fp32 and mixed_bfloat16, XLA off, one device.
"""

import itertools
import json
import os
import statistics
import subprocess
import time

from absl import app, flags, logging
import keras
import numpy as np
import tensorflow as tf

from tfdaseg import methods, models
from tfdaseg.training import loop
from tfdaseg.training.model import OptimizationConfig, build_training_model
from tfdaseg.training.precision import set_precision

_QUICK = flags.DEFINE_bool("quick", False, "Only fp32 and mixed_bfloat16, XLA off, one device.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per configuration.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after tracing.")
_SIZE = flags.DEFINE_string("size", "320x160", "WxH of source and target images.")
_METHODS = flags.DEFINE_list("methods", ["adaptsegnet", "dacs"], "Methods timed per "
                             "configuration; the first is the baseline of relative_to_*.")
_TORCH_PYTHON = flags.DEFINE_string(
    "torch_python", None, "A Python with torch installed: also time the PyTorch reference step "
    "(bench/torch_reference_step.py) in this run and report speedups against it.")

MODEL = "deeplab_v2_resnet101_multi"
NUM_CLASSES = 19
BATCH = 1
# JSON name -> --mixed_precision value.
PRECISIONS = {"fp32": "none", "bf16": "mixed_bfloat16"}


def _devices(replicas: int) -> list[str]:
  gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
  pool = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
  if len(pool) < replicas:
    raise RuntimeError(f"{replicas} replicas need {replicas} devices; found {pool}")
  return pool[:replicas]


def _strategy(replicas: int) -> tf.distribute.Strategy:
  devices = _devices(replicas)
  if replicas == 1:
    return tf.distribute.OneDeviceStrategy(devices[0])
  return tf.distribute.MirroredStrategy(devices)


def _batches(width: int, height: int, replicas: int) -> tf.data.Dataset:
  rng = np.random.default_rng(0)
  batch_size = BATCH * replicas
  element = {
      stream: {"image": rng.normal(0, 50, (batch_size, height, width, 3)).astype(np.float32),
               "label": rng.integers(0, NUM_CLASSES, (batch_size, height, width)).astype(np.int32)}
      for stream in (methods.SOURCE, methods.TARGET)}
  return tf.data.Dataset.from_tensors(element).repeat()


def measure(method_name: str, precision: str, xla: bool, replicas: int, width: int,
            height: int) -> dict:
  """Builds the model for one method and configuration and returns its JSON record."""
  set_precision(PRECISIONS[precision])
  keras.utils.set_random_seed(0)
  strategy = _strategy(replicas)
  with strategy.scope():
    generator = models.build(MODEL, num_classes=NUM_CLASSES)
    method = methods.build(method_name, num_classes=NUM_CLASSES)
    model = build_training_model(generator, method, num_classes=NUM_CLASSES,
                                 head_variables=models.split_head_variables(generator)[1],
                                 head_lr_multiplier=models.head_learning_rate_multiplier(
                                     generator),
                                 config=OptimizationConfig(), precision=PRECISIONS[precision],
                                 jit_compile=xla)
  step_fn = loop.distributed_step(model, strategy, iter_size=1)
  iterator = iter(strategy.experimental_distribute_dataset(_batches(width, height, replicas)))
  started = time.time()
  step_fn(iterator)["loss/generator_total"].numpy()
  logging.info("%s %s xla=%s replicas=%d: first step (trace%s) %.1f s", method_name, precision,
               xla, replicas, " + XLA compile" if xla else "", time.time() - started)
  for _ in range(_WARMUP.value):
    step_fn(iterator)["loss/generator_total"].numpy()
  times = []
  for index in range(_STEPS.value):
    started = time.time()
    step_fn(iterator)["loss/generator_total"].numpy()
    times.append(time.time() - started)
    logging.info("  step %d/%d: %.3f s", index + 1, _STEPS.value, times[-1])
  return {"bench": "train_step", "method": method_name, "model": MODEL, "size": f"{width}x{height}", "batch": BATCH,
          "precision": precision, "xla": xla, "replicas": replicas,
          "s_per_step_median": round(statistics.median(times), 4)}


def torch_reference(python: str, size: str) -> dict:
  """Runs bench/torch_reference_step.py under `python` and returns its JSON record."""
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference_step.py")
  logging.info("PyTorch reference step (%s)...", python)
  result = subprocess.run([python, script, f"--size={size}", f"--steps={_STEPS.value}",
                           f"--warmup={_WARMUP.value}"], check=True, stdout=subprocess.PIPE,
                          text=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
  del argv
  width, height = (int(v) for v in _SIZE.value.lower().split("x"))
  reference = None
  if _TORCH_PYTHON.value:
    reference = torch_reference(_TORCH_PYTHON.value, _SIZE.value)
    logging.info("%s", reference)
  if _QUICK.value:
    configs = [(precision, False, 1) for precision in PRECISIONS]
  else:
    configs = list(itertools.product(PRECISIONS, (False, True), (1, 2)))
  results = []
  baseline = _METHODS.value[0]
  for precision, xla, replicas in configs:
    records = {name: measure(name, precision, xla, replicas, width, height)
               for name in _METHODS.value}
    for name, record in records.items():
      if name != baseline:
        record[f"relative_to_{baseline}"] = round(
            record["s_per_step_median"] / records[baseline]["s_per_step_median"], 3)
      logging.info("%s", record)
    results.extend(records.values())
  set_precision("none")
  if reference:
    print(json.dumps(reference), flush=True)
    for record in results:
      record["torch_s_per_step_median"] = reference["s_per_step_median"]
      # Throughput ratio: a step of `replicas` replicas trains `replicas` times the reference's
      # batch of 1.
      record["speedup_vs_torch"] = round(
          reference["s_per_step_median"] * record["replicas"] / record["s_per_step_median"], 3)
  for record in results:
    print(json.dumps(record), flush=True)


def _two_logical_cpus() -> None:
  # Two logical devices for the 2-replica configurations on CPU-only machines; must happen
  # before TensorFlow runs any op.
  if not tf.config.list_physical_devices("GPU"):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


if __name__ == "__main__":
  _two_logical_cpus()
  app.run(main)
