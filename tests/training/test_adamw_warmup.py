"""DAFormer's optimisation options: torch AdamW with head multipliers, mmcv's linear warm-up."""

import subprocess
import sys

import keras
import numpy as np
import pytest

from tfdaseg.training import optimizers
from tfdaseg.training.schedules import PolyDecay


def numpy_torch_adamw(params, grads, lrs, decay, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
  """torch.optim.AdamW's update (torch/optim/adamw.py, amsgrad off), in numpy float64; `decay`
  is one value or one per parameter (param groups)."""
  params = [p.astype(np.float64) for p in params]
  decays = decay if isinstance(decay, list) else [decay] * len(params)
  m = [np.zeros_like(p) for p in params]
  v = [np.zeros_like(p) for p in params]
  for step, step_grads in enumerate(grads, start=1):
    for i, g in enumerate(step_grads):
      lr = lrs[step - 1][i]
      params[i] *= 1 - lr * decays[i]
      m[i] = beta_1 * m[i] + (1 - beta_1) * g
      v[i] = beta_2 * v[i] + (1 - beta_2) * g * g
      denom = np.sqrt(v[i]) / np.sqrt(1 - beta_2 ** step) + epsilon
      params[i] -= lr / (1 - beta_1 ** step) * m[i] / denom
  return params


def test_torch_adamw_matches_pytorch_semantics_with_10x_heads_warmup_and_poly():
  rng = np.random.default_rng(0)
  initial = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)]
  # Small gradients: epsilon matters, which is where Keras' AdamW differs.
  grads = [[1e-6 * rng.normal(size=p.shape).astype(np.float32) for p in initial]
           for _ in range(6)]
  variables = [keras.Variable(initial[0], name="backbone"), keras.Variable(initial[1], name="head")]
  base_lr, num_steps, warmup = 0.05, 10, 3
  optimizer = optimizers.generator_optimizer(base_lr, num_steps, 1.0, momentum=0.9,
                                             weight_decay=0.01, head_variables=[variables[1]],
                                             optimizer="adamw", warmup_steps=warmup)
  optimizer.build(variables)
  for step_grads in grads:
    optimizer.apply([keras.ops.convert_to_tensor(g) for g in step_grads], variables)
  # mmcv: regular (poly) rate x (1 - (1 - 1e-6) * (1 - t / warmup)) for t < warmup.
  rates = [base_lr * (1 - t / num_steps) * (1 - (1 - 1e-6) * max(1 - t / warmup, 0))
           for t in range(len(grads))]
  expected = numpy_torch_adamw(initial, grads, [[r, 10 * r] for r in rates], 0.01)
  for variable, want in zip(variables, expected):
    np.testing.assert_allclose(variable.numpy(), want, rtol=1e-5, atol=1e-7)


def test_no_decay_variables_are_not_decayed():
  # DAFormer's paramwise_cfg: the encoder's norms decay_mult 0, the rest decayed.
  initial = [np.full((3,), 2.0, np.float32), np.full((2,), 3.0, np.float32)]
  grads = [[np.full(p.shape, 1e-3, np.float32) for p in initial] for _ in range(3)]
  variables = [keras.Variable(initial[0], name="kernel"), keras.Variable(initial[1], name="norm")]
  for name in ("adamw", "sgd"):
    for variable, value in zip(variables, initial):
      variable.assign(value)
    optimizer = optimizers.generator_optimizer(0.05, 10, 1.0, momentum=0.0, weight_decay=0.5,
                                               head_variables=[], optimizer=name,
                                               no_decay_variables=[variables[1]])
    optimizer.build(variables)
    for step_grads in grads:
      optimizer.apply([keras.ops.convert_to_tensor(g) for g in step_grads], variables)
    if name == "adamw":
      rates = [[0.05 * (1 - t / 10)] * 2 for t in range(len(grads))]
      expected = numpy_torch_adamw(initial, grads, rates, [0.5, 0.0])
    else:  # torch SGD without momentum: w -= lr * (g + decay * w).
      expected = [p.astype(np.float64) for p in initial]
      for t, step_grads in enumerate(grads):
        for i, (g, decay) in enumerate(zip(step_grads, (0.5, 0.0))):
          expected[i] = expected[i] - 0.05 * (1 - t / 10) * (g + decay * expected[i])
    for variable, want in zip(variables, expected):
      np.testing.assert_allclose(variable.numpy(), want, rtol=1e-5, err_msg=name)


def test_warmup_schedule_values_and_serialisation():
  schedule = PolyDecay(1.0, 100, 1.0, warmup_steps=10, warmup_ratio=0.1)
  assert float(schedule(0)) == pytest.approx(0.1)
  assert float(schedule(5)) == pytest.approx(0.95 * (1 - 0.9 * 0.5))
  assert float(schedule(10)) == pytest.approx(0.9)
  assert float(schedule(50)) == pytest.approx(0.5)
  restored = PolyDecay.from_config(schedule.get_config())
  assert float(restored(5)) == pytest.approx(float(schedule(5)))
  assert float(PolyDecay(1.0, 100, 1.0)(0)) == 1.0


def test_the_train_command_takes_the_options():
  script = ("from absl import flags\n"
            "from tfdaseg.training import config\n"
            "fv = flags.FlagValues(); config.define_flags(fv)\n"
            "fv(['t', '--optimizer=adamw', '--warmup_steps=1500'])\n"
            "o = config.TrainConfig.from_flags(fv).optimization\n"
            "print(o.optimizer, o.warmup_steps)\n"
            "fv(['t', '--optimizer=adam'])\n")
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
  assert "adamw 1500" in result.stdout
  assert "--optimizer" in result.stderr and "sgd" in result.stderr
