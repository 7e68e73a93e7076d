"""Reads the scalar curves of a run from its TensorBoard event files (TensorFlow only).

Scalars written with `tf.summary.scalar` / `tf.summary.write` are stored as tensors; older
`simple_value` summaries are read too. Image and text summaries are skipped.
"""

import os

import numpy as np
import tensorflow as tf

EVENT_GLOB = "events.out.tfevents.*"


def event_files(run_dir: str) -> list[str]:
  """The event files of a run: in `run_dir` and its subfolders, sorted.

  Raises:
    FileNotFoundError: when there are none.
  """
  files = sorted(tf.io.gfile.glob(os.path.join(run_dir, EVENT_GLOB)) +
                 tf.io.gfile.glob(os.path.join(run_dir, "*", EVENT_GLOB)))
  if not files:
    raise FileNotFoundError(f"{run_dir}: no TensorBoard event files ({EVENT_GLOB})")
  return files


def _scalar(value) -> float | None:
  if value.HasField("tensor"):
    array = tf.make_ndarray(value.tensor)
    if array.size == 1 and np.issubdtype(array.dtype, np.number):
      return float(array.reshape(()))
    return None
  if value.HasField("simple_value"):
    return float(value.simple_value)
  return None


def read_scalars(run_dir: str) -> dict[str, tuple[list[int], list[float]]]:
  """Every scalar tag of a run as (steps, values), by step.

  A step logged twice (a run resumed from an earlier checkpoint) keeps its latest value.

  Args:
    run_dir: The run's folder (a training model_dir).

  Returns:
    {tag: (steps, values)}.
  """
  latest: dict[str, dict[int, tuple[float, float]]] = {}
  for path in event_files(run_dir):
    try:
      for event in tf.compat.v1.train.summary_iterator(path):
        for value in event.summary.value:
          scalar = _scalar(value)
          if scalar is None:
            continue
          seen = latest.setdefault(value.tag, {})
          if event.step not in seen or seen[event.step][0] <= event.wall_time:
            seen[event.step] = (event.wall_time, scalar)
    except tf.errors.DataLossError:
      # A writer still running (or killed) leaves a truncated last record; keep what was read.
      continue
  return {tag: ([step for step in sorted(points)], [points[step][1] for step in sorted(points)])
          for tag, points in latest.items()}
