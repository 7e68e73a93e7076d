"""Semi-supervised adaptation on the demo data: six methods, several labelled-target counts, seeds.

Generates the demo's synthetic "game" (source) and "real" (target) domains once, converts them
(the target train split with its labels), then for every seed trains `source_only` and, for
every `--counts` N, `target_only`, `source_and_target`, `adaptsegnet_ssl`, `ass` and
`region_selection` on the same N labelled target images (`--target_labeled_count=N`, drawn from
the seed), each with the public `python -m tfdaseg.train`, scored on the "real" val split by the
trainer's validation at the last step. Writes `<root>/results.json`, `<root>/table.md` (mean
and spread over the seeds) and `<root>/semi_supervised.png` (bars), and prints one JSON line.

Every run shares configs/demo/semi_supervised.cfg; `--steps`, `--input_size`, `--base_width`,
`--batch_size` and the data sizes shrink it. The full run (the demo's sizes; hours on 2 CPU
cores):
  python bench/semi_supervised.py --root=bench_out/semi_supervised_full --jobs=2
A reduced run (the one reported with issue 13, ~3 min per run on 2 busy CPU cores):
  python bench/semi_supervised.py --seeds=0,1 --steps=40 --input_size=64,32 --base_width=8 \
      --batch_size=4 --num_source=300 --num_target_train=100 --num_target_val=60 \
      --data_size=128x64 --train_flags=--summary_every=0
"""

import concurrent.futures
import io
import json
import os
import subprocess
import sys
import time

import numpy as np
from absl import app, flags
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)

from tfdaseg.utils.files import atomic_write_bytes, atomic_write_json, read_json  # noqa: E402

_ROOT = flags.DEFINE_string("root", "bench_out/semi_supervised", "Folder for data and runs.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds (and labelled draws).")
_COUNTS = flags.DEFINE_list("counts", ["10", "50"], "Labelled target image counts.")
_METHODS = flags.DEFINE_list(
    "methods", ["source_only", "target_only", "source_and_target", "adaptsegnet_ssl", "ass",
                "region_selection"], "Methods to run (source_only once per seed).")
_STEPS = flags.DEFINE_integer("steps", 600, "Training steps of every run.")
_INPUT_SIZE = flags.DEFINE_string("input_size", "128,64", "Training size W,H of every stream.")
_BASE_WIDTH = flags.DEFINE_integer("base_width", 16, "Generator base width.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Batch of every stream.")
_NUM_SOURCE = flags.DEFINE_integer("num_source", 1500, "Source (game) images.")
_NUM_TARGET_TRAIN = flags.DEFINE_integer("num_target_train", 1500, "Target train images.")
_NUM_TARGET_VAL = flags.DEFINE_integer("num_target_val", 200, "Target val images.")
_DATA_SIZE = flags.DEFINE_string("data_size", "256x128", "Generated image size WxH.")
_DATA_SEED = flags.DEFINE_integer("data_seed", 0, "Seed of the generated data.")
_TRAIN_FLAGS = flags.DEFINE_list("train_flags", [], "Extra flags for every training run.")
_JOBS = flags.DEFINE_integer(
    "jobs", 1, "Trainings run at once, each with TF_NUM_INTRAOP_THREADS = CPUs // jobs (unless "
    "set): a run's single-threaded phases (import, tracing, validation) overlap the others' "
    "steps.", lower_bound=1)

CONFIG = "configs/demo/semi_supervised.cfg"
# Methods that read no labelled target stream.
NO_LABELLED_TARGET = {"source_only"}


def _run(argv: list[str], threads: int | None = None) -> None:
  env = {"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ}
  if threads:
    env.setdefault("TF_NUM_INTRAOP_THREADS", str(threads))
  result = subprocess.run([sys.executable, *argv], cwd=_REPO, env=env, capture_output=True,
                          text=True, check=False)
  if result.returncode != 0:
    raise SystemExit(f"failed (exit {result.returncode}): {' '.join(argv)}\n"
                     f"{result.stderr[-3000:]}")


def make_data(root: str) -> dict[str, str]:
  """The demo domains, converted; returns the TFRecord pattern of each training flag."""
  raw = os.path.join(root, "data", "raw")
  _run(["tools/make_demo_data.py", f"--output_dir={raw}", f"--seed={_DATA_SEED.value}",
        f"--num_source={_NUM_SOURCE.value}", f"--num_target_train={_NUM_TARGET_TRAIN.value}",
        f"--num_target_val={_NUM_TARGET_VAL.value}", f"--size={_DATA_SIZE.value}"])
  jobs = {"source_train": ("gta5", "train"), "target_train": ("cityscapes", "train"),
          "target_val": ("cityscapes", "val")}
  patterns = {}
  for flag, (dataset, split) in jobs.items():
    output = os.path.join(root, "data", "tfrecords", flag)
    pattern = os.path.join(output, f"{dataset}-{split}-*.tfrecord")
    if not os.path.exists(os.path.join(output, f"{dataset}-{split}.manifest.json")):
      _run(["tools/convert_to_tfrecord.py", f"--dataset={dataset}",
            f"--data_dir={os.path.join(raw, dataset)}", f"--split={split}",
            f"--output_dir={output}", "--num_shards=2"])
    patterns[flag] = pattern
  return patterns


def train_and_score(model_dir: str, method: str, count: int | None, seed: int,
                    patterns: dict[str, str], threads: int | None = None) -> tuple[float, float]:
  """Trains one run (or finds it trained); returns its target val mIoU at the last step.

  Args:
    model_dir: The run's folder, relative to the repository root.
    method: A `--method`.
    count: Labelled target images (None: the method reads none).
    seed: `--random_seed`, which also draws the labelled images.
    patterns: TFRecord pattern per data flag.
    threads: TF_NUM_INTRAOP_THREADS of the run (None: TensorFlow's default).

  Returns:
    (the mIoU, 0..1, of the run's validation at its last step; the run's seconds).
  """
  started = time.time()
  argv = ["-m", "tfdaseg.train", f"--flagfile={CONFIG}", f"--model_dir={model_dir}",
          f"--method={method}", f"--random_seed={seed}", f"--num_steps={_STEPS.value}",
          f"--num_steps_stop={_STEPS.value}", f"--save_pred_every={_STEPS.value}",
          f"--eval_every={_STEPS.value}", f"--input_size={_INPUT_SIZE.value}",
          f"--input_size_target={_INPUT_SIZE.value}", f"--base_width={_BASE_WIDTH.value}",
          f"--batch_size={_BATCH_SIZE.value}",
          *(f"--{flag}={pattern}" for flag, pattern in patterns.items()),
          "--image_summary_every=0", *_TRAIN_FLAGS.value]
  if count is not None:
    argv.append(f"--target_labeled_count={count}")
  _run(argv, threads)
  miou = read_json(os.path.join(_REPO, model_dir, "validation.json"))["best"]["miou"]
  return miou, time.time() - started


def summarise(scores: dict[str, list[float]]) -> dict[str, dict]:
  """Per row: mean, sample standard deviation and the seeds' values, in mIoU points."""
  rows = {}
  for key, values in scores.items():
    points = np.array(values) * 100
    rows[key] = {"mean": round(float(points.mean()), 2),
                 "std": round(float(points.std(ddof=1)), 2) if len(points) > 1 else 0.0,
                 "values": [round(float(v), 2) for v in points]}
  return rows


def write_table(path: str, rows: dict[str, dict], methods: list[str], counts: list[int]) -> None:
  """Markdown: one row per method, one column per count (mean ± spread, mIoU points)."""
  lines = ["| method | " + " | ".join(f"N={n}" for n in counts) + " |",
           "|---|" + "---|" * len(counts)]
  for method in methods:
    cells = []
    for n in counts:
      row = rows.get(f"{method}@{n}") or rows.get(method)
      cells.append(f"{row['mean']:.1f} ± {row['std']:.1f}" if row else "")
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def plot(path: str, rows: dict[str, dict], methods: list[str], counts: list[int]) -> None:
  """Grouped bars (one group per count), error bars the spread over seeds."""
  figure = Figure(figsize=(2 + 1.6 * len(counts) * len(methods) / 3, 4))
  FigureCanvasAgg(figure)
  axes = figure.add_subplot()
  width = 0.8 / len(methods)
  for index, method in enumerate(methods):
    found = [rows.get(f"{method}@{n}") or rows.get(method) for n in counts]
    axes.bar(np.arange(len(counts)) + index * width, [r["mean"] for r in found], width,
             yerr=[r["std"] for r in found], label=method, capsize=3)
  axes.set_xticks(np.arange(len(counts)) + width * (len(methods) - 1) / 2)
  axes.set_xticklabels([f"{n} labelled target images" for n in counts])
  axes.set_ylabel("target val mIoU (%)")
  axes.legend(fontsize=8)
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=100)
  atomic_write_bytes(path, buffer.getvalue())


def report(root: str, scores: dict[str, list[float]], methods: list[str], counts: list[int],
           seeds: list[int], elapsed: float) -> dict[str, dict]:
  """Writes results.json, table.md and the chart of the runs so far; returns the rows."""
  rows = summarise(scores)
  atomic_write_json(os.path.join(root, "results.json"),
                    {"rows": rows, "seeds": seeds, "counts": counts, "steps": _STEPS.value,
                     "elapsed_s": round(elapsed, 1)})
  done = [m for m in methods if all(f"{m}@{n}" in rows or m in rows for n in counts)]
  write_table(os.path.join(root, "table.md"), rows, methods, counts)
  if done:
    plot(os.path.join(root, "semi_supervised.png"), rows, done, counts)
  return rows


def main(argv: list[str]) -> None:
  del argv
  started = time.time()
  root = _ROOT.value
  seeds, counts, methods = [int(s) for s in _SEEDS.value], [int(n) for n in _COUNTS.value], \
      list(_METHODS.value)
  patterns = make_data(root)
  print(f"data ready in {time.time() - started:.0f} s", flush=True)
  runs = [(seed, method, count) for seed in seeds for method in methods
          for count in ([None] if method in NO_LABELLED_TARGET else counts)]
  threads = max(1, (os.cpu_count() or 1) // _JOBS.value) if _JOBS.value > 1 else None
  found: dict[tuple[int, str], float] = {}
  rows: dict[str, dict] = {}
  with concurrent.futures.ThreadPoolExecutor(_JOBS.value) as pool:
    futures = {}
    for seed, method, count in runs:
      key = method if count is None else f"{method}@{count}"
      future = pool.submit(train_and_score, os.path.join(root, "runs", f"seed{seed}", key),
                           method, count, seed, patterns, threads)
      futures[future] = (seed, key)
    for future in concurrent.futures.as_completed(futures):
      seed, key = futures[future]
      if future.exception() is not None:
        pool.shutdown(wait=False, cancel_futures=True)
        raise future.exception()
      found[(seed, key)], seconds = future.result()
      print(f"seed {seed} {key}: mIoU {found[(seed, key)] * 100:.1f} ({seconds:.0f} s)",
            flush=True)
      # After every run, so that an interrupted bench leaves the table of the runs so far; the
      # seeds' values in seed order whatever order the runs end in.
      scores = {}
      for (_, run_key), miou in sorted(found.items()):
        scores.setdefault(run_key, []).append(miou)
      rows = report(root, scores, methods, counts, seeds, time.time() - started)
  with open(os.path.join(root, "table.md")) as f:
    print(f.read())
  print(json.dumps({"bench": "semi_supervised", "rows": rows,
                    "elapsed_s": round(time.time() - started, 1)}))


if __name__ == "__main__":
  app.run(main)
