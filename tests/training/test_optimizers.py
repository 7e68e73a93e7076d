"""TorchSGD against a numpy torch.optim.SGD, the poly schedule, the discriminator Adam."""

import json

import keras
import numpy as np
import pytest

from tfdaseg.training import optimizers
from tfdaseg.training.schedules import PolyDecay


def numpy_torch_sgd(params, grads_per_step, lrs, momentum, weight_decay):
  """torch.optim.SGD(momentum, weight_decay, dampening=0, nesterov=False), one lr per param
  group and step: d = g + wd * p; buf = d (first step) else momentum * buf + d; p -= lr * buf."""
  params = [p.astype(np.float64).copy() for p in params]
  buffers = [None] * len(params)
  for step, grads in enumerate(grads_per_step):
    for i, (p, g) in enumerate(zip(params, grads)):
      d = g + weight_decay * p
      buffers[i] = d.copy() if buffers[i] is None else momentum * buffers[i] + d
      p -= lrs[step][i] * buffers[i]
  return params


def test_torch_sgd_matches_pytorch_semantics_with_10x_heads_and_poly_decay():
  rng = np.random.default_rng(0)
  initial = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)]
  grads = [[rng.normal(size=p.shape).astype(np.float32) for p in initial] for _ in range(6)]
  variables = [keras.Variable(initial[0], name="backbone"), keras.Variable(initial[1], name="head")]
  base_lr, num_steps, power = 0.05, 10, 0.9
  optimizer = optimizers.generator_optimizer(base_lr, num_steps, power, momentum=0.9,
                                             weight_decay=5e-4, head_variables=[variables[1]])
  optimizer.build(variables)
  for step_grads in grads:
    optimizer.apply([keras.ops.convert_to_tensor(g) for g in step_grads], variables)
  poly = [base_lr * (1 - s / num_steps) ** power for s in range(len(grads))]
  expected = numpy_torch_sgd(initial, grads, [[lr, 10 * lr] for lr in poly], 0.9, 5e-4)
  for variable, want in zip(variables, expected):
    np.testing.assert_allclose(variable.numpy(), want, rtol=1e-5, atol=1e-6)


def test_torch_sgd_differs_from_keras_sgd_under_a_changing_rate():
  # Keras folds the rate into its velocity; the reference does not. Guard against a regression
  # to keras.optimizers.SGD: with a decaying rate the two must disagree.
  schedule = PolyDecay(0.1, 4, 1.0)
  ours, theirs = keras.Variable([1.0]), keras.Variable([1.0])
  torch_like = optimizers.TorchSGD(schedule, momentum=0.9)
  keras_sgd = keras.optimizers.SGD(schedule, momentum=0.9)
  for _ in range(3):
    torch_like.apply([keras.ops.ones((1,))], [ours])
    keras_sgd.apply([keras.ops.ones((1,))], [theirs])
  expected = numpy_torch_sgd([np.ones(1)], [[np.ones(1)]] * 3,
                             [[0.1 * (1 - s / 4)] for s in range(3)], 0.9, 0.0)[0]
  np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-6)
  assert abs(float(ours.numpy()[0]) - float(theirs.numpy()[0])) > 1e-3


def test_torch_sgd_rejects_unknown_multiplier_paths_and_decoupled_decay():
  with pytest.raises(ValueError, match="weight_decay"):
    optimizers.TorchSGD(0.1, weight_decay=0.1)
  optimizer = optimizers.TorchSGD(0.1, lr_multipliers={"nowhere/kernel": 10.0})
  with pytest.raises(ValueError, match="nowhere/kernel"):
    optimizer.build([keras.Variable([1.0], name="w")])


def test_poly_decay_values_and_serialisation():
  schedule = PolyDecay(2.5e-4, 250000, 0.9)
  for step in (0, 1000, 149999, 250000, 300000):
    expected = 2.5e-4 * max(1 - step / 250000, 0.0) ** 0.9
    assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-12)
  config = json.loads(json.dumps(keras.saving.serialize_keras_object(schedule)))
  restored = keras.saving.deserialize_keras_object(config)
  assert isinstance(restored, PolyDecay) and restored.get_config() == schedule.get_config()


def test_torch_sgd_serialises():
  optimizer = optimizers.TorchSGD(PolyDecay(0.1, 10), momentum=0.8, l2_weight_decay=1e-4,
                                  lr_multipliers={"a/kernel": 10.0})
  restored = keras.saving.deserialize_keras_object(
      json.loads(json.dumps(keras.saving.serialize_keras_object(optimizer))))
  assert (restored.momentum, restored.l2_weight_decay, restored.lr_multipliers) == (
      0.8, 1e-4, {"a/kernel": 10.0})


def test_discriminator_adam_has_the_reference_betas():
  from tfdaseg import methods
  spec = methods.discriminator("output_space_discriminator", "logits", 1e-4).optimizer
  adam = optimizers.network_optimizer(spec, 100, 0.9, name="d")
  assert (adam.beta_1, adam.beta_2, adam.epsilon) == (0.9, 0.99, 1e-8)
  assert float(adam.learning_rate) == pytest.approx(1e-4)


def test_network_optimizers_follow_their_spec():
  from tfdaseg import methods
  constant = optimizers.network_optimizer(
      methods.OptimizerSpec("sgd", 0.01, "constant", {"momentum": 0.5}), 100, 0.9, name="w")
  assert isinstance(constant, optimizers.TorchSGD) and constant.momentum == 0.5
  assert float(constant.learning_rate) == pytest.approx(0.01)
  with pytest.raises(KeyError, match="known: adam, sgd"):
    optimizers.network_optimizer(methods.OptimizerSpec("lamb", 0.01), 100, 0.9, name="w")
  with pytest.raises(ValueError, match="known: poly, constant"):
    optimizers.network_optimizer(methods.OptimizerSpec("adam", 0.01, "cosine"), 100, 0.9, "w")
