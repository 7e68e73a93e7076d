"""Benchmarks the multi-level DeepLab-v2 ResNet-101 generator: forward and forward+backward time
in eager mode, under tf.function and under tf.function(jit_compile=True) (XLA), with the
achieved GFLOP/s next to this machine's float32 matmul GFLOP/s.

FLOPs are counted analytically from the conv shapes (2 * MACs of every Conv2D and of the summed
head branches, at the benchmark's input size; BatchNorm, ReLU, padding and pooling are left out),
and cross-checked against `tf.compat.v1.profiler` on the tf.function graph. Forward+backward
FLOPs are estimated as 3x forward (each conv's backward computes input and weight gradients).

Usage:
  python bench/models.py [--width=320 --height=160 --runs=5 --modes=eager,function,xla]
Prints progress, then one JSON line per measurement.
"""

import json
import statistics
import time
from typing import Callable

import keras
import tensorflow as tf
from absl import app, flags, logging

import tfdaseg.models
from tfdaseg.models import outputs as keys
from tfdaseg.models.aspp_classifier import AsppClassifier

FLAGS = flags.FLAGS
flags.DEFINE_integer("width", 320, "Input width.")
flags.DEFINE_integer("height", 160, "Input height.")
flags.DEFINE_integer("batch_size", 1, "Batch size.")
flags.DEFINE_integer("num_classes", 19, "Classes of the heads.")
flags.DEFINE_integer("warmup", 2, "Untimed runs before timing (the first one traces/compiles).")
flags.DEFINE_integer("runs", 5, "Timed runs; the median is reported.")
flags.DEFINE_list("modes", ["eager", "function", "xla"], "Execution modes to time.")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16"], "Keras dtype policy.")
flags.DEFINE_integer("matmul_size", 2048, "Size n of the n x n float32 matmul peak measurement.")

MODEL = "deeplab_v2_resnet101_multi"


def conv_flops(model: keras.Model) -> int:
  """2 * multiply-accumulates of the model's convolutions (static input shape required)."""
  total = 0
  for layer in model.layers:
    if isinstance(layer, keras.layers.Conv2D):
      _, height, width, out_channels = layer.output.shape
      kh, kw, in_channels, _ = layer.kernel.shape
      total += 2 * height * width * kh * kw * in_channels * out_channels
    elif isinstance(layer, AsppClassifier):
      _, height, width, _ = layer.output.shape
      for kernel in layer.kernels[:layer.num_summed]:
        kh, kw, in_channels, out_channels = kernel.shape
        total += 2 * height * width * kh * kw * in_channels * out_channels
  return total * FLAGS.batch_size


def profiler_flops(function: tf.types.experimental.GenericFunction, image: tf.Tensor) -> int:
  """Float operations of a traced tf.function, as `tf.compat.v1.profiler` counts them."""
  graph = function.get_concrete_function(image).graph
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options["output"] = "none"
  return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops


def median_seconds(step: Callable[[], object], warmup: int, runs: int) -> tuple[float, float]:
  """(median seconds per call, first-call seconds) of `step`, which must return tensors."""
  first = None
  for _ in range(warmup):
    start = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), step())
    first = first or time.perf_counter() - start
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), step())  # .numpy() waits for the result.
    times.append(time.perf_counter() - start)
  return statistics.median(times), first


def matmul_gflops(size: int, runs: int) -> float:
  """Measured float32 GFLOP/s of an n x n matmul (the machine's practical peak)."""
  a = tf.random.normal((size, size))
  b = tf.random.normal((size, size))
  matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
  seconds, _ = median_seconds(matmul, warmup=2, runs=runs)
  return 2 * size ** 3 / seconds / 1e9


def main(argv):
  del argv
  keras.mixed_precision.set_global_policy(FLAGS.precision)
  shape = (FLAGS.height, FLAGS.width, 3)
  model = tfdaseg.models.build(MODEL, num_classes=FLAGS.num_classes, input_shape=shape)
  image = tf.random.normal((FLAGS.batch_size,) + shape, stddev=50.0)
  forward_flops = conv_flops(model)

  def forward(x):
    out = model(x, training=False)
    return out[keys.LOGITS], out[keys.AUX_LOGITS]

  def forward_backward(x):
    with tf.GradientTape() as tape:
      out = model(x, training=True)
      loss = sum(tf.reduce_mean(tf.cast(out[k], tf.float32)) for k in keys.LOGIT_KEYS)
    return tape.gradient(loss, model.trainable_variables)

  wrappers = {
      "eager": lambda f: f,
      "function": lambda f: tf.function(f, reduce_retracing=True),
      "xla": lambda f: tf.function(f, jit_compile=True),
  }
  graph_flops = profiler_flops(tf.function(forward), image)
  logging.info("forward FLOPs: %.2f G analytic (convs), %.2f G tf.profiler graph",
               forward_flops / 1e9, graph_flops / 1e9)
  peak = matmul_gflops(FLAGS.matmul_size, FLAGS.runs)
  logging.info("float32 matmul %d^3: %.1f GFLOP/s", FLAGS.matmul_size, peak)

  results = []
  for mode in FLAGS.modes:
    for name, fn, flops in (("forward", forward, forward_flops),
                            ("forward_backward", forward_backward, 3 * forward_flops)):
      step = wrappers[mode](fn)
      logging.info("timing %s %s ...", mode, name)
      seconds, first = median_seconds(lambda: step(image), FLAGS.warmup, FLAGS.runs)
      results.append({
          "benchmark": "models", "model": MODEL, "mode": mode, "pass": name,
          "precision": FLAGS.precision, "input_wh": [FLAGS.width, FLAGS.height],
          "batch_size": FLAGS.batch_size, "median_s": round(seconds, 4),
          "first_call_s": round(first, 2), "runs": FLAGS.runs, "gflops": round(flops / 1e9, 2),
          "achieved_gflops_per_s": round(flops / seconds / 1e9, 1),
          "fraction_of_matmul_peak": round(flops / seconds / 1e9 / peak, 3),
      })
      logging.info("%s %s: %.3f s (first call %.1f s)", mode, name, seconds, first)
  results.append({"benchmark": "matmul", "size": FLAGS.matmul_size,
                  "gflops_per_s": round(peak, 1)})
  results.append({"benchmark": "flops", "model": MODEL, "forward_gflops_analytic":
                  round(forward_flops / 1e9, 2),
                  "forward_gflops_tf_profiler": round(graph_flops / 1e9, 2)})
  for result in results:
    print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
