"""EMA networks: the moving-average rule, and identical teachers on one and two replicas."""

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import training as helpers
from tests.helpers.methods import two_cpu_strategy
from tests.helpers.models import tiny_generator
from tfdaseg import methods, models
from tfdaseg.methods import losses
from tfdaseg.models import outputs
from tfdaseg.training import loop
from tfdaseg.training.model import build_networks, build_training_model, moving_average_update


class Distillation(methods.Method):
  """Source CE plus MSE(student, EMA teacher) on target: an EMA method without random draws."""

  streams = {methods.SOURCE: methods.StreamSpec(labelled=True, domain=methods.SOURCE),
             methods.TARGET: methods.StreamSpec(labelled=False, domain=methods.TARGET)}
  inference_network = "teacher"

  def networks(self):
    return {"teacher": methods.ema_teacher(alpha=0.9)}

  def adaptation_objective(self, ctx):
    student = ctx.outputs(methods.TARGET)[outputs.LOGITS]
    teacher = ctx.outputs(methods.TARGET, "teacher", training=False)[outputs.LOGITS]
    objective = methods.Objective()
    objective.add_loss("consistency", tf.reduce_mean(tf.square(
        tf.nn.softmax(student) - tf.stop_gradient(tf.nn.softmax(teacher)))))
    return objective


def distillation_model():
  tf.keras.utils.set_random_seed(0)
  generator = tiny_generator(num_classes=helpers.NUM_CLASSES, bn_mode="frozen")
  return build_training_model(generator, Distillation(methods.MethodConfig(), helpers.NUM_CLASSES),
                              num_classes=helpers.NUM_CLASSES,
                              head_variables=models.split_head_variables(generator)[1],
                              head_lr_multiplier=10.0,
                              config=helpers.TINY_OPTIMIZER)


def train(strategy, steps=3):
  with strategy.scope():
    model = distillation_model()
  step_fn = loop.distributed_step(model, strategy, iter_size=1)
  data = helpers.dataset_fn(helpers.stream_arrays(), 2)
  iterator = iter(strategy.distribute_datasets_from_function(lambda c: data(c, 0)))
  history = []
  for _ in range(steps):
    history.append([np.array(v) for v in model.generator.trainable_variables])
    step_fn(iterator)
  return model, history


def test_teacher_follows_dacs_rule_and_is_identical_on_one_and_two_replicas():
  one, history = train(tf.distribute.OneDeviceStrategy("/cpu:0"))
  two, _ = train(two_cpu_strategy())
  # DACS: alpha_t = min(1 - 1/(t+1), alpha) after update t (t = 0 copies the student).
  students = history[1:] + [[np.array(v) for v in one.generator.trainable_variables]]
  teacher = students[0]
  for t in (1, 2):
    decay = min(1 - 1 / (t + 1), 0.9)
    teacher = [decay * a + (1 - decay) * s for a, s in zip(teacher, students[t])]
  for actual, expected in zip(one.networks["teacher"].trainable_variables, teacher):
    np.testing.assert_allclose(np.array(actual), expected, rtol=1e-5, atol=1e-6)
  assert any(np.abs(np.array(t) - np.array(s)).max() > 1e-6 for t, s in zip(
      one.networks["teacher"].trainable_variables, one.generator.trainable_variables))
  for a, b in zip(one.networks["teacher"].weights, two.networks["teacher"].weights):
    np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5)


def test_moving_average_update_outside_a_strategy():
  average, value = tf.Variable([1.0, 3.0]), tf.Variable([3.0, 5.0])
  moving_average_update([average], [value], tf.constant(0.25))
  np.testing.assert_allclose(average.numpy(), [2.5, 4.5])


def test_ema_of_another_architecture_is_refused():
  class Mismatch(Distillation):
    def networks(self):
      spec = methods.ema_teacher(alpha=0.9)
      return {"teacher": methods.NetworkSpec(
          build=lambda ctx: tiny_generator(num_classes=helpers.NUM_CLASSES, base_width=8),
          ema=spec.ema)}
  generator = tiny_generator(num_classes=helpers.NUM_CLASSES)
  with pytest.raises(ValueError, match="averages 'generator' but their variables differ"):
    build_networks(Mismatch(methods.MethodConfig(), helpers.NUM_CLASSES), generator,
                   helpers.NUM_CLASSES)


def test_pixel_weights_and_tensor_loss_weights():
  logits = tf.random.stateless_normal([1, 4, 4, 3], [1, 2])
  labels = tf.constant(np.tile([0, 1, 2, 255], (1, 4, 1)).astype(np.int32))
  plain = float(losses.segmentation_loss(logits, labels, 3))
  halved = float(losses.segmentation_loss(logits, labels, 3, pixel_weights=tf.fill([1, 4, 4], .5)))
  assert halved == pytest.approx(plain / 2, rel=1e-6)
  over_all = float(losses.segmentation_loss(logits, labels, 3, average_over_all_pixels=True))
  assert over_all == pytest.approx(plain * 12 / 16, rel=1e-6)
  objective = methods.Objective()
  objective.add_loss("a", tf.constant(2.0), tf.constant(0.25))
  objective.add_loss("b", tf.constant(1.0), 1.0)
  assert float(objective.total()) == pytest.approx(1.5)
