"""Seconds per training step of multi-level AdaptSegNet against the PyTorch reference, interleaved.

The step is the one `tfdaseg.train` runs (`tfdaseg.training.loop.distributed_step`): DeepLab-v2
ResNet-101 at full depth, 19 classes, both discriminators, source and target at 320x160, batch
1, on in-memory random batches, with `--bn_mode=reference` by default: batch statistics in
training, running statistics updated, gamma/beta fixed, as the reference's `model.train()` with
frozen affine parameters (bench/torch_reference_step.py runs exactly that).

Every configuration (precision x XLA x replicas) and the reference run in warm processes of their
own, started (built, traced, warmed up) one after the other. Then `--rounds` rounds time
`--steps` steps of each side in turn (the order rotates every round), so that a slow drift of a
noisy machine lands on both sides of a round's ratio. Reported per configuration: the per-round
medians, the per-round speedups over the reference (images/s over the reference's), their
median and spread. The goal: >= 1.2 in fp32 and >= 2.0 in bf16 (one device, XLA off).

`--methods=adaptsegnet,dacs` also times other methods' steps on the same generator and batches
(each in a worker of its own, in the same rounds); their records get `relative_to_adaptsegnet`,
per round and as the median. The default adds the DAFormer line, "daformer": not a method but
configs/gta5_to_cityscapes/daformer.cfg (MiT-B5 with the DAFormer head, DACS with the EMA teacher,
ClassMix and the ImageNet feature distance, AdamW, `--bn_mode=train` as the config has it),
built by bench/config_step.py as `tfdaseg.train` builds it, on the same batches (batch 1 + 1 at
`--size`, not the config's 2 + 2 at 512x512); its `relative_to_adaptsegnet` is the DAFormer
step over the DeepLab-v2 AdaptSegNet step of the same round. "hrda" (not in the default: its
first step traces two views of MiT-B5) is configs/gta5_to_cityscapes/hrda.cfg the same way, its
detail window half the bench crop per side (HRDA's 512 of 1024; `config_step.hrda_overrides`).

Prints progress, then LAST one JSON object per configuration and one "environment" object:
  {"bench": "train_step", "method": "adaptsegnet", "precision": "fp32", "xla": false, "replicas": 1,
   "s_per_step_rounds": [...], "speedup_rounds": [...], "speedup_median": ..., ...}

Usage: python bench/train_step.py [--quick] [--rounds=3] [--steps=3] [--warmup=2]
                                  [--torch_python=PYTHON] [--bn_mode=reference]
                                  [--deterministic=off|on|both]
                                  [--methods=adaptsegnet,daformer,hrda,dacs]
  --quick: fp32 and mixed_bfloat16, XLA off, one device.
  --torch_python: an interpreter with torch (a separate venv: `pip install torch==2.13.0 numpy`).
"""

import itertools
import json
import os
import statistics
import sys
import time

from absl import app, flags, logging

from config_step import (DAFORMER_CONFIG, HRDA_CONFIG, build_step,  # bench/
                         daformer_overrides, hrda_overrides, random_element, train_config)
from worker_protocol import Worker, environment, serve  # bench/, the script's folder

_QUICK = flags.DEFINE_bool("quick", False, "Only fp32 and mixed_bfloat16, XLA off, one device.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per side and round.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after tracing.")
_SIZE = flags.DEFINE_string("size", "320x160", "WxH of source and target images.")
_BN_MODE = flags.DEFINE_enum("bn_mode", "reference", ["reference", "frozen", "train"],
                             "Generator BatchNorm mode (the reference runs `reference`).")
_TORCH_PYTHON = flags.DEFINE_string(
    "torch_python", None, "A Python with torch installed: also time the PyTorch reference step "
    "(bench/torch_reference_step.py) and report speedups against it.")
_DETERMINISTIC = flags.DEFINE_enum(
    "deterministic", "off", ["off", "on", "both"], "Run the steps as `--deterministic` does "
    "(tfdaseg.training.determinism); `both` adds a deterministic twin of every configuration "
    "and reports its cost per round.")
_PRECISION_NAMES = flags.DEFINE_list("precisions", ["fp32", "bf16"], "Precisions timed (fp32, bf16).")
_METHODS = flags.DEFINE_list(
    "methods", ["adaptsegnet", "daformer"], "Methods timed per configuration on DeepLab-v2, or "
    "'daformer' / 'hrda' (daformer.cfg's / hrda.cfg's MiT-B5 DACS step); the first is the "
    "baseline of relative_to_* "
    "(and of the torch speedups).")
_WORKER = flags.DEFINE_string("worker", None, "Internal: run one configuration "
                              "'method,precision,xla,replicas,deterministic' as a warm worker.")

MODEL = "deeplab_v2_resnet101_multi"
NUM_CLASSES = 19
BATCH = 1
# JSON name -> --mixed_precision value.
PRECISIONS = {"fp32": "none", "bf16": "mixed_bfloat16"}
REFERENCE = "torch"
# --methods entries that are whole configs (bench/config_step.py) -> their flagfile.
# The HRDA line needs its detail window scaled to the bench's crop.
CONFIG_LINES = {"daformer": (DAFORMER_CONFIG, lambda size: []),
                "hrda": (HRDA_CONFIG, hrda_overrides)}
_HERE = os.path.dirname(os.path.abspath(__file__))


def _size() -> tuple[int, int]:
  width, height = (int(v) for v in _SIZE.value.lower().split("x"))
  return width, height


def run_worker(method_name: str, precision: str, xla: bool, replicas: int,
               deterministic: bool) -> None:
  """Builds, traces and warms up one configuration, then serves timed steps."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfdaseg.training.determinism import enable_determinism, onednn_custom_ops_enabled  # pylint: disable=g-import-not-at-top
  if deterministic:
    enable_determinism()
  if replicas > 1 and not tf.config.list_physical_devices("GPU"):
    # Logical CPU devices must exist before TensorFlow runs an op.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tfdaseg import methods, models  # pylint: disable=g-import-not-at-top
  from tfdaseg.training import loop  # pylint: disable=g-import-not-at-top
  from tfdaseg.training.model import OptimizationConfig, build_training_model  # pylint: disable=g-import-not-at-top
  from tfdaseg.training.precision import set_precision  # pylint: disable=g-import-not-at-top

  width, height = _size()
  set_precision(PRECISIONS[precision])
  keras.utils.set_random_seed(0)
  devices = ([d.name for d in tf.config.list_logical_devices("GPU")]
             or [d.name for d in tf.config.list_logical_devices("CPU")])[:replicas]
  strategy = (tf.distribute.OneDeviceStrategy(devices[0]) if replicas == 1
              else tf.distribute.MirroredStrategy(devices))
  if method_name in CONFIG_LINES:
    # The config's step as the trainer builds it; only the batches are the bench's.
    flagfile, size_overrides = CONFIG_LINES[method_name]
    config = train_config(flagfile, daformer_overrides(
        "b5", PRECISIONS[precision], batch=BATCH * replicas, xla="on" if xla else "off")
        + size_overrides((width, height)))
    _, _, step_fn = build_step(config, strategy)
    element = random_element(config, (width, height))
    line = {"model": config.model.model, "bn_mode": config.model.bn_mode,
            "config": flagfile}
  else:
    with strategy.scope():
      generator = models.build(MODEL, num_classes=NUM_CLASSES, bn_mode=_BN_MODE.value)
      method = methods.build(method_name, num_classes=NUM_CLASSES)
      model = build_training_model(
          generator, method, num_classes=NUM_CLASSES,
          head_variables=models.split_head_variables(generator)[1],
          head_lr_multiplier=models.head_learning_rate_multiplier(generator),
          config=OptimizationConfig(), precision=PRECISIONS[precision], jit_compile=xla)
    rng = np.random.default_rng(0)
    element = {
        stream: {"image": rng.normal(0, 50, (BATCH * replicas, height, width, 3)).astype(
                     np.float32),
                 "label": rng.integers(0, NUM_CLASSES, (BATCH * replicas, height, width)).astype(
                     np.int32)}
        for stream in (methods.SOURCE, methods.TARGET)}
    step_fn = loop.distributed_step(model, strategy, iter_size=1)
    line = {"model": MODEL, "bn_mode": _BN_MODE.value}
  iterator = iter(strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors(element).repeat()))
  step = lambda: step_fn(iterator)["loss/generator_total"].numpy()
  started = time.perf_counter()
  step()
  first = time.perf_counter() - started
  for _ in range(_WARMUP.value):
    step()
  # Which checkout was measured (bench/worker_protocol.py puts the bench's own first).
  serve(step, {**line, "first_step_s": round(first, 2),
                "tfdaseg": os.path.dirname(os.path.dirname(models.__file__)),
                "tensorflow": tf.__version__,
                "keras": keras.__version__, "numpy": np.__version__,
                "onednn_custom_ops": onednn_custom_ops_enabled(),
                "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
                "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()})


def main(argv: list[str]) -> None:
  del argv
  if _WORKER.value:
    method, precision, xla, replicas, deterministic = _WORKER.value.split(",")
    run_worker(method, precision, xla == "True", int(replicas), deterministic == "True")
    return
  # Other work on the machine biases the ratio, not only the times: under load the reference's
  # OpenMP threads lose far more than TensorFlow's pool (on 2 busy cores fp32 read 1.92x, idle
  # 1.04x, in one session). The load before any worker starts is recorded and warned about.
  load_at_start = os.getloadavg()[0]
  if load_at_start > 0.5:
    logging.warning("load average %.2f before the bench: other work shares the CPUs, and the "
                    "speedups over the reference will read too high", load_at_start)
  determinism = {"off": (False,), "on": (True,), "both": (False, True)}[_DETERMINISTIC.value]
  if _QUICK.value:
    configs = list(itertools.product(_METHODS.value, _PRECISION_NAMES.value, (False,), (1,),
                                     determinism))
  else:
    configs = list(itertools.product(_METHODS.value, _PRECISION_NAMES.value, (False, True), (1, 2),
                                     determinism))
  common = [f"--size={_SIZE.value}", f"--warmup={_WARMUP.value}"]
  workers = {}
  if _TORCH_PYTHON.value:
    workers[REFERENCE] = Worker(REFERENCE, [_TORCH_PYTHON.value,
                                            os.path.join(_HERE, "torch_reference_step.py"),
                                            "--serve", *common])
  for config in configs:
    workers[config] = Worker(
        "%s %s xla=%s replicas=%d deterministic=%s" % config,
        [sys.executable, os.path.abspath(__file__), "--worker=%s,%s,%s,%d,%s" % config,
         f"--bn_mode={_BN_MODE.value}", *common])
  names = list(workers)
  medians = {name: [] for name in names}
  for index in range(_ROUNDS.value):
    shift = index % len(names)
    for name in names[shift:] + names[:shift]:
      medians[name].append(statistics.median(workers[name].time_steps(_STEPS.value)))
    logging.info("round %d/%d: %s", index + 1, _ROUNDS.value,
                 {workers[n].name: round(m[-1], 3) for n, m in medians.items()})
  for worker in workers.values():
    worker.close()
  info = {**environment(), "load_average_1m": {"before": round(load_at_start, 2),
                                                 "after": round(os.getloadavg()[0], 2)}}
  for name, worker in workers.items():
    info[worker.name] = worker.info
  print(json.dumps(info), flush=True)
  for config in configs:
    method, precision, xla, replicas, deterministic = config
    # What the worker built: the model, its BatchNorm mode and, for a config line, the config.
    line = {k: v for k, v in workers[config].info.items() if k in ("model", "bn_mode", "config")}
    record = {"bench": "train_step", "method": method, **line, "size": _SIZE.value,
              "batch": BATCH, "precision": precision, "xla": xla,
              "replicas": replicas, "deterministic": deterministic, "rounds": _ROUNDS.value,
              "steps_per_round": _STEPS.value,
              "s_per_step_rounds": [round(m, 4) for m in medians[config]],
              "s_per_step_median": round(statistics.median(medians[config]), 4)}
    baseline = (_METHODS.value[0], *config[1:])
    if method != baseline[0]:
      relative = [round(m / b, 3) for m, b in zip(medians[config], medians[baseline])]
      record.update({f"relative_to_{baseline[0]}_rounds": relative,
                     f"relative_to_{baseline[0]}": round(statistics.median(relative), 3)})
    if REFERENCE in workers and method == baseline[0]:
      # A step of `replicas` replicas trains `replicas` times the reference's batch of 1.
      speedups = [round(ref * replicas / ours, 3)
                  for ref, ours in zip(medians[REFERENCE], medians[config])]
      record.update({"torch_s_per_step_rounds": [round(m, 4) for m in medians[REFERENCE]],
                     "speedup_rounds": speedups,
                     "speedup_median": round(statistics.median(speedups), 3),
                     "speedup_spread": round(max(speedups) - min(speedups), 3)})
    twin = (method, precision, xla, replicas, False)
    if deterministic and twin in workers:
      costs = [round(d / n, 3) for d, n in zip(medians[config], medians[twin])]
      record.update({"cost_vs_nondeterministic_rounds": costs,
                     "cost_vs_nondeterministic_median": round(statistics.median(costs), 3)})
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
  app.run(main)
