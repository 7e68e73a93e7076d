"""Deterministic pseudo-random weights for full-size PyTorch parity checks (numpy only).

Full-size state dicts are too big to commit, so `tools/make_torch_parity_fixtures.py` (with torch)
and `tests/models/test_torch_parity.py` (without) both generate them from a seed: keys in sorted
order, one draw per key from one `np.random.default_rng(seed)`, the distribution picked by the
key's suffix and rank. Keep this module free of torch and TensorFlow imports.
"""

from typing import Mapping

import numpy as np


def _draw(rng: np.random.Generator, key: str, shape: tuple) -> np.ndarray:
  if key.endswith("running_var"):
    return rng.uniform(0.5, 1.5, shape)
  if key.endswith("running_mean"):
    return rng.normal(0.0, 0.1, shape)
  if len(shape) in (2, 4):
    # LeCun-normal conv kernels (OIHW) and Linear weights ([out, in]): with the ReLUs, each
    # residual branch shrinks its input, so 33 random bottlenecks (whose BatchNorm statistics do
    # not match) stay bounded; the MiT's attention logits stay of order 1.
    fan_in = int(np.prod(shape[1:]))
    return rng.normal(0.0, np.sqrt(1.0 / fan_in), shape)
  if key.endswith("weight"):  # A BatchNorm or LayerNorm scale.
    return rng.uniform(0.5, 1.5, shape)
  return rng.normal(0.0, 0.1, shape)  # Biases (conv and BatchNorm).


def deterministic_state_dict(shapes: Mapping[str, tuple], seed: int) -> dict[str, np.ndarray]:
  """Returns float32 arrays for `shapes` (PyTorch key -> shape, kernels OIHW).

  Args:
    shapes: The state dict's keys and shapes (without `num_batches_tracked`).
    seed: Seed of the single generator drawn from in sorted key order.

  Returns:
    PyTorch key -> float32 array.
  """
  rng = np.random.default_rng(seed)
  return {key: _draw(rng, key, tuple(shapes[key])).astype(np.float32) for key in sorted(shapes)}


def deterministic_input(shape: tuple, seed: int, kind: str) -> np.ndarray:
  """Returns a float32 NHWC input: "image" (Caffe-preprocessed scale) or "probabilities"
  (uniform in [0, 1))."""
  rng = np.random.default_rng(seed)
  if kind == "image":
    return rng.normal(0.0, 50.0, shape).astype(np.float32)
  if kind == "probabilities":
    return rng.random(shape).astype(np.float32)
  raise ValueError(f"unknown input kind {kind!r}")
