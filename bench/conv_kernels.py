"""The convolutions of DeepLab-v2 ResNet-101, TensorFlow against torch, alone and interleaved.

bench/train_step.py's AdaptSegNet step spends about three quarters of its op time in
convolutions (a TF profiler trace), and on x86 CPUs both TensorFlow and torch run them with oneDNN.
This bench times every convolution shape of the generator (forward, then the gradients of the
input and the filter; the first layer's input gets none, as the reference's image needs none), at
the input size of bench/train_step.py, batch 1, so that a step's gap to the reference can be split
into the kernels' and the rest's.

Each side runs in a process of its own per round (TensorFlow: the model's own layers,
`tfdaseg.models.padded_conv.padded_conv`, in float32 or the mixed_bfloat16 policy; torch:
`torch.nn.functional.conv2d` with the reference's padding, in float32 or bfloat16), warms up every shape once, then times `--steps` repetitions of each
and reports their medians. Rounds alternate the sides, the order rotating, so that drift lands on
every side. Reported: per shape, the median over rounds of each side's seconds; the network's
total (each shape times its count in the network) per round and side; and the per-round ratios
torch fp32 / side, their median and spread.

Caveat, measured: the torch side's convolutions alone (one `autograd.grad` per shape) summed to
1.6-1.9 s per forward + backward at 320x160, more than their share of a whole reference step
(the torch profiler put convolutions at ~71% of its step, as the TF profiler does for ours), so
compare the TensorFlow sides with each other and bf16 with bf16; bench/train_step.py's whole-step
ratio is the one against the reference.

Plain Python with argparse (the torch side runs in a venv without TensorFlow or absl):
  python bench/conv_kernels.py --torch_python=PYTHON [--rounds=3] [--steps=3] [--size=320x160]
      [--sides=torch_fp32,tf_fp32,tf_bf16,torch_bf16] [--threads=2]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# ResNet-101 stages of DeepLab-v2 (Caffe layout: the stride on the first 1x1 conv; stages 3
# and 4 dilated 2 and 4 instead of strided): (planes, blocks, stride, dilation).
STAGES = ((64, 3, 1, 1), (128, 4, 2, 1), (256, 23, 1, 2), (512, 3, 1, 4))
# The two ASPP classifiers (layer5 on stage 3, layer6 on stage 4): 3x3 convs to 19 classes.
ASPP_DILATIONS = (6, 12, 18, 24)
NUM_CLASSES = 19
SIDES = ("torch_fp32", "tf_fp32", "tf_bf16", "torch_bf16")


def conv_shapes(width: int, height: int) -> dict[str, dict]:
  """Every convolution of the multi-level generator at a width x height input, with counts.

  Returns:
    key -> {"h", "w" (input map), "cin", "cout", "k", "stride", "pad", "dilation", "count",
    "input_grad"}.
  """
  shapes: dict[str, dict] = {}

  def add(h, w, cin, cout, k, stride=1, dilation=1, input_grad=True):
    pad = dilation * (k - 1) // 2
    key = f"{k}x{k}/{stride} d{dilation} {cin}->{cout} @{h}x{w}"
    entry = shapes.setdefault(key, {"h": h, "w": w, "cin": cin, "cout": cout, "k": k,
                                    "stride": stride, "pad": pad, "dilation": dilation,
                                    "count": 0, "input_grad": input_grad})
    entry["count"] += 1
    return (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1, \
        (w + 2 * pad - dilation * (k - 1) - 1) // stride + 1

  h, w = add(height, width, 3, 64, 7, stride=2, input_grad=False)
  # Max pool 3x3 / 2, padding 1, ceil mode (the Caffe DeepLab).
  h, w = -(-(h + 2 - 3) // 2) + 1, -(-(w + 2 - 3) // 2) + 1
  channels = 64
  for planes, blocks, stride, dilation in STAGES:
    for block in range(blocks):
      s = stride if block == 0 else 1
      if block == 0:
        add(h, w, channels, planes * 4, 1, stride=s)
      h2, w2 = add(h, w, channels, planes, 1, stride=s)
      add(h2, w2, planes, planes, 3, dilation=dilation)
      add(h2, w2, planes, planes * 4, 1)
      h, w, channels = h2, w2, planes * 4
    if planes == 256:
      aspp_in = (h, w, channels)
  for cin_h, cin_w, cin in (aspp_in, (h, w, channels)):
    for d in ASPP_DILATIONS:
      add(cin_h, cin_w, cin, NUM_CLASSES, 3, dilation=d)
  return shapes


def tf_worker(shapes: dict, precision: str, steps: int) -> dict[str, float]:
  """Median seconds per shape of TensorFlow's forward + backward, through the model's own layer
  code (`tfdaseg.models.padded_conv.padded_conv`, in the run's Keras precision policy)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from tfdaseg.models.padded_conv import padded_conv  # pylint: disable=g-import-not-at-top
  from tfdaseg.training.precision import set_precision  # pylint: disable=g-import-not-at-top
  set_precision("mixed_bfloat16" if precision == "bf16" else "none")
  rng = np.random.default_rng(0)
  results = {}
  for key, s in shapes.items():
    inputs = keras.Input((s["h"], s["w"], s["cin"]))
    layer = keras.Model(inputs, padded_conv(inputs, s["cout"], s["k"], "conv",
                                            strides=s["stride"], dilation=s["dilation"],
                                            padding=s["pad"]))
    x = tf.constant(rng.normal(size=(1, s["h"], s["w"], s["cin"])).astype(np.float32))
    upstream = tf.cast(rng.normal(size=layer(x).shape).astype(np.float32),
                       layer.outputs[0].dtype)

    @tf.function
    def step(x=x, layer=layer, s=s, upstream=upstream):
      with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
      sources = [x, *layer.trainable_variables] if s["input_grad"] else \
          layer.trainable_variables
      return tape.gradient(y, sources, output_gradients=upstream)

    results[key] = _time(lambda step=step: [g.numpy() for g in step()], steps)
  return results


def torch_worker(shapes: dict, precision: str, steps: int, threads: int) -> dict[str, float]:
  """Median seconds per shape of torch's forward + backward."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  dtype = torch.bfloat16 if precision == "bf16" else torch.float32
  generator = torch.Generator().manual_seed(0)
  results = {}
  for key, s in shapes.items():
    x = torch.randn(1, s["cin"], s["h"], s["w"], generator=generator).to(dtype)
    x.requires_grad_(s["input_grad"])
    kernel = (torch.randn(s["cout"], s["cin"], s["k"], s["k"], generator=generator) * 0.01).to(
        dtype).requires_grad_(True)

    def conv(x=x, kernel=kernel, s=s):
      return torch.nn.functional.conv2d(x, kernel, stride=s["stride"], padding=s["pad"],
                                        dilation=s["dilation"])

    upstream = torch.randn(conv().shape, generator=generator).to(dtype)
    sources = [x, kernel] if s["input_grad"] else [kernel]

    def step(conv=conv, upstream=upstream, sources=sources):
      return torch.autograd.grad(conv(), sources, grad_outputs=upstream)

    results[key] = _time(step, steps)
  return results


def _time(step, steps: int) -> float:
  step()  # warm-up: primitive creation, tracing
  times = []
  for _ in range(steps):
    started = time.perf_counter()
    step()
    times.append(time.perf_counter() - started)
  return statistics.median(times)


def run_side(side: str, args: argparse.Namespace) -> dict[str, float]:
  """One round of one side, in a fresh process of the side's interpreter."""
  framework, precision = side.split("_")
  python = args.torch_python if framework == "torch" else sys.executable
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  result = subprocess.run(
      [python, os.path.abspath(__file__), f"--worker={side}", f"--steps={args.steps}",
       f"--size={args.size}", f"--threads={args.threads}"],
      capture_output=True, text=True, check=False, env=env)
  if result.returncode != 0:
    raise SystemExit(f"conv_kernels: error: the {side} worker failed (exit "
                     f"{result.returncode}):\n{result.stderr[-3000:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--torch_python", help="An interpreter with torch (a separate venv).")
  parser.add_argument("--sides", default=",".join(SIDES))
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--size", default="320x160", help="Input WxH (bench/train_step.py's).")
  parser.add_argument("--threads", type=int, default=os.cpu_count(),
                      help="torch's threads (TensorFlow uses its default pool: every core).")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args()
  width, height = (int(v) for v in args.size.split("x"))
  shapes = conv_shapes(width, height)
  if args.worker:
    framework, precision = args.worker.split("_")
    times = (tf_worker(shapes, precision, args.steps) if framework == "tf"
             else torch_worker(shapes, precision, args.steps, args.threads))
    print(json.dumps(times), flush=True)
    return
  sides = args.sides.split(",")
  if any(side.startswith("torch") for side in sides) and not args.torch_python:
    parser.error("--torch_python is needed for the torch sides")
  rounds: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
  for index in range(args.rounds):
    shift = index % len(sides)
    for side in sides[shift:] + sides[:shift]:
      rounds[side].append(run_side(side, args))
      total = sum(shapes[k]["count"] * t for k, t in rounds[side][-1].items())
      print(f"round {index + 1}/{args.rounds} {side}: network convs {total:.3f} s",
            file=sys.stderr, flush=True)
  totals = {side: [sum(shapes[k]["count"] * t for k, t in r.items()) for r in rs]
            for side, rs in rounds.items()}
  report = {"bench": "conv_kernels", "size": args.size, "threads": args.threads,
            "load_average_1m": round(os.getloadavg()[0], 2),
            "network_total_s_rounds": {s: [round(t, 4) for t in ts] for s, ts in totals.items()},
            "per_shape_median_s": {
                key: {"count": shapes[key]["count"],
                      **{side: round(statistics.median(r[key] for r in rounds[side]), 5)
                         for side in sides}} for key in shapes}}
  if "torch_fp32" in totals:
    for side in sides:
      ratios = [a / b for a, b in zip(totals["torch_fp32"], totals[side])]
      report[f"torch_fp32_over_{side}"] = {"rounds": [round(r, 3) for r in ratios],
                                           "median": round(statistics.median(ratios), 3),
                                           "spread": round(max(ratios) - min(ratios), 3)}
  print(json.dumps(report))


if __name__ == "__main__":
  main()
