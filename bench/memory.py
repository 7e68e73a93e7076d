"""Peak memory of one DAFormer training step: fp32 / mixed_bfloat16 (/ mixed_float16 on a GPU),
gradient checkpointing (`MitConfig.recompute`) off and on.

The step is the trainer's DAFormer step (`configs/gta5_to_cityscapes/daformer.cfg`, built by
bench/config_step.py as `tfdaseg.train` builds it): DACS with the EMA teacher, ClassMix, the
thing-class ImageNet feature distance (its frozen copy of the generator) and AdamW, on a source
batch and a target batch of `--batch` images each (the config's 2 + 2) at `--input_size`
squared (DAFormer's 512x512 crops), random data, no initial weights read.

Each configuration runs in a fresh subprocess, so peaks do not mix. It builds the model and the
optimisers ("built"), runs `--warmup` steps (the first traces the step, and with XLA compiles
it: on a CPU that alone holds hundreds of MiB of graphs; `first_step_peak_mib` is the peak
through it), resets the peak count and measures one more step:
- GPU: `tf.config.experimental.get_memory_info("GPU:0")`, "current" and, after
  `reset_memory_stats`, "peak".
- CPU: the process's resident memory from /proc/self/status, VmRSS and, after resetting it
  through /proc/self/clear_refs, VmHWM (peak RSS); where the reset is refused the peak is the
  whole process's (`memory` says which). The parent also records the child's lifetime peak RSS
  from `os.wait4` (`ru_maxrss`).
Reported per configuration: built, peak, and step = peak - built (what the step adds: the
activations, gradients, workspaces; on CPU also TensorFlow's graph and malloc's caches), plus the
ratios to the same precision without recompute and to fp32 with the same recompute setting.

Reference: DAFormer trained on one RTX 2080 Ti (11 GB; lhoyer/DAFormer README "All experiments
were executed on an NVIDIA RTX 2080 Ti"), which according to its training logs used 9.7 GB
(the maintainer, lhoyer/DAFormer issue #42). The reference runs the source backward pass before
the mixed images' forward pass (mmseg/models/uda/dacs.py `forward_train`), tfdaseg's trainer one
backward pass of the summed losses; a GPU peak here is the number to hold against the 9.7 GB.

Usage: python bench/memory.py [--variant=b5] [--input_size=512] [--batch=2] [--config=CFG]
                              [--precisions=fp32,bf16,fp16] [--recompute=off,on] [--xla=auto]
  [--warmup=1]  fp16 is skipped without a GPU. Prints progress, a table, then one JSON object per
  configuration (after an "environment" one).
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags, logging

from config_step import (DAFORMER_CONFIG, build_step, daformer_overrides, iterator,  # bench/
                         random_element, train_config)

_VARIANT = flags.DEFINE_enum("variant", "b5", ["b0", "b1", "b2", "b3", "b4", "b5"],
                             "MiT variant of the DAFormer generator (the reference: b5).")
_INPUT_SIZE = flags.DEFINE_integer("input_size", 512, "Side of the square crops (reference 512).")
_BATCH = flags.DEFINE_integer("batch", 2, "Images per stream: source and target (reference 2).")
_PRECISIONS = flags.DEFINE_list("precisions", ["fp32", "bf16", "fp16"],
                                "Precisions (fp32, bf16, fp16; fp16 only on a GPU).")
_RECOMPUTE = flags.DEFINE_list("recompute", ["off", "on"], "MitConfig.recompute settings.")
_WARMUP = flags.DEFINE_integer(
    "warmup", 1, "Steps before the measured one: the first traces the step (and with XLA compiles "
    "it), which on a CPU costs resident memory of its own.", lower_bound=0)
_XLA = flags.DEFINE_enum("xla", "auto", ["auto", "on", "off"], "The trainer's --xla.")
_CONFIG = flags.DEFINE_string(
    "config", DAFORMER_CONFIG, "The config whose step is measured (relative to the repository "
    "root), with --model=daformer_mit_<variant>; e.g. configs/gta5_to_cityscapes/source_only.cfg "
    "for the plain supervised step.")
_OVERRIDES = flags.DEFINE_multi_string(
    "override", [], "A trainer flag on top of the config and the bench's (repeatable), e.g. "
    "--override=--levels=single.")
_CHILD = flags.DEFINE_string("child", None, "Internal: measure one configuration "
                             "'precision,recompute' and print its JSON line.")

# JSON name -> --mixed_precision value.
PRECISIONS = {"fp32": "none", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
MIB = 2**20
# lhoyer/DAFormer issue #42: 9.7 GB of the RTX 2080 Ti's 11 GB used in training (its logs).
REFERENCE_GPU_GB = 9.7
_HERE = os.path.dirname(os.path.abspath(__file__))


def _status_kib(key: str) -> int:
  """A field of /proc/self/status in KiB (VmRSS, VmHWM)."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(key + ":"):
        return int(line.split()[1])
  raise KeyError(key)


def _reset_peak_rss() -> bool:
  """Resets VmHWM to the current RSS (Linux: "5" to clear_refs); False where refused."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def _current_bytes(gpu: bool) -> int:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return (tf.config.experimental.get_memory_info("GPU:0")["current"] if gpu
          else _status_kib("VmRSS") * 1024)


def _peak_bytes(gpu: bool) -> int:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return (tf.config.experimental.get_memory_info("GPU:0")["peak"] if gpu
          else _status_kib("VmHWM") * 1024)


def _reset_peak(gpu: bool) -> str:
  """Restarts the peak count; returns what the peak then measures."""
  if gpu:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.experimental.reset_memory_stats("GPU:0")
    return "get_memory_info peak"
  return "VmHWM after reset" if _reset_peak_rss() else "VmHWM of the process"


def measure(precision: str, recompute: bool) -> dict:
  """Builds one configuration, runs one step and returns its memory (child process)."""
  config = train_config(_CONFIG.value, daformer_overrides(
      _VARIANT.value, PRECISIONS[precision], recompute, _BATCH.value, _XLA.value)
      + _OVERRIDES.value)
  model, strategy, step_fn = build_step(config)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  element = random_element(config, (_INPUT_SIZE.value, _INPUT_SIZE.value))
  batches = iterator(strategy, element)
  gpu = bool(tf.config.list_logical_devices("GPU"))
  record = {"method": config.method_name, "device": "GPU:0" if gpu else "CPU",
            "xla": model.jit_compile_step,
            "tensorflow": tf.__version__, "warmup": _WARMUP.value}
  step = lambda: float(step_fn(batches)["loss/generator_total"].numpy())
  built = _current_bytes(gpu)
  for _ in range(_WARMUP.value):
    started = time.perf_counter()
    step()
    record.setdefault("first_step_s", round(time.perf_counter() - started, 1))
    record.setdefault("first_step_peak_mib", round(_peak_bytes(gpu) / MIB))
  before = _current_bytes(gpu)
  record["memory"] = _reset_peak(gpu)
  started = time.perf_counter()
  loss = step()
  record["step_s"] = round(time.perf_counter() - started, 1)
  peak = _peak_bytes(gpu)
  record.update(built_mib=round(built / MIB), before_step_mib=round(before / MIB),
                peak_mib=round(peak / MIB), step_mib=round((peak - built) / MIB),
                loss=round(loss, 4), variables=len(model.generator.trainable_variables))
  return record


def _run_child(precision: str, recompute: bool) -> dict:
  """One configuration in a fresh process; adds the child's lifetime peak RSS (os.wait4)."""
  argv = [sys.executable, os.path.abspath(__file__), f"--child={precision},{recompute}",
          f"--variant={_VARIANT.value}", f"--input_size={_INPUT_SIZE.value}",
          f"--batch={_BATCH.value}", f"--xla={_XLA.value}", f"--warmup={_WARMUP.value}",
          f"--config={_CONFIG.value}", *(f"--override={o}" for o in _OVERRIDES.value)]
  logging.info("running %s", " ".join(argv))
  process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(_HERE))
  lines = process.stdout.read().splitlines()
  _, status, usage = os.wait4(process.pid, 0)
  records = [json.loads(line) for line in lines if line.startswith("{")]
  if status or not records:
    raise RuntimeError(f"memory child {precision},{recompute} failed (wait status {status})")
  # ru_maxrss is in KiB on Linux.
  return {**records[-1], "process_max_rss_mib": round(usage.ru_maxrss * 1024 / MIB)}


def _has_gpu() -> bool:
  # Asked in a child, so that the parent never initialises TensorFlow (nor holds GPU memory).
  out = subprocess.run([sys.executable, "-c", "import tensorflow as tf; "
                        "print(len(tf.config.list_physical_devices('GPU')))"],
                       capture_output=True, text=True, check=True).stdout
  return int(out.split()[-1]) > 0


def _ratio(numerator: dict | None, denominator: dict | None) -> float | None:
  if not numerator or not denominator or denominator["step_mib"] <= 0:
    return None
  return round(numerator["step_mib"] / denominator["step_mib"], 3)


def table(records: list[dict]) -> str:
  """A Markdown table of the records."""
  lines = ["| precision | recompute | built MiB | peak MiB | step MiB | step/plain | step/fp32 "
           "| step s |", "|---|---|---|---|---|---|---|---|"]
  for r in records:
    lines.append(f"| {r['precision']} | {r['recompute']} | {r['built_mib']} | {r['peak_mib']} "
                 f"| {r['step_mib']} | {r['relative_to_plain']} | {r['relative_to_fp32']} "
                 f"| {r['step_s']} |")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  del argv
  if _CHILD.value:
    precision, recompute = _CHILD.value.split(",")
    print(json.dumps(measure(precision, recompute == "True")), flush=True)
    return
  gpu = _has_gpu()
  precisions = [p for p in _PRECISIONS.value if gpu or p != "fp16"]
  recomputes = [{"off": False, "on": True}[r] for r in _RECOMPUTE.value]
  results = {}
  for precision in precisions:
    for recompute in recomputes:
      results[precision, recompute] = _run_child(precision, recompute)
      logging.info("%s recompute=%s: %s", precision, recompute, results[precision, recompute])
  records = []
  for (precision, recompute), measured in results.items():
    records.append({
        "bench": "memory", "model": f"daformer_mit_{_VARIANT.value}", "config": _CONFIG.value,
        "input_size": _INPUT_SIZE.value,
        "batch_per_stream": _BATCH.value, "precision": precision,
        "recompute": recompute, **measured,
        "relative_to_plain": _ratio(measured, results.get((precision, False))),
        "relative_to_fp32": _ratio(measured, results.get(("fp32", recompute))),
        "reference_gpu_gb": REFERENCE_GPU_GB})
  print(table(records), flush=True)
  print(json.dumps({"bench": "environment", "gpu": gpu, "cores": os.cpu_count(),
                    "tensorflow": records[0]["tensorflow"] if records else None}), flush=True)
  for record in records:
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
  app.run(main)
