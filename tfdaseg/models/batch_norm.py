"""BatchNorm of the ResNet generators, in one of three modes (`bn_mode`).

  * "reference": what AdaptSegNet and ADVENT train with. Their scripts call `model.train()` and
    only set `requires_grad = False` on BatchNorm's affine parameters (AdaptSegNet
    model/deeplab_multi.py:62-64, 127-129, 156-157; ADVENT advent/model/deeplabv2.py:13-15), so
    in training every forward normalises with the batch's statistics and updates the running
    ones, while gamma and beta stay fixed. Evaluation uses the running statistics.
  * "frozen": inference-mode BatchNorm in training too; nothing of it changes.
  * "train": ordinary Keras BatchNorm; gamma and beta are trained too (training from scratch).
"""

import keras
from keras import ops
import tensorflow as tf

# PyTorch BatchNorm2d defaults: eps 1e-5, momentum 0.1. Keras weighs the old value by its
# momentum, PyTorch the new one: Keras momentum = 1 - PyTorch momentum.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9

BN_MODES = ("reference", "frozen", "train")


@keras.saving.register_keras_serializable(package="tfdaseg")
class ReferenceBatchNormalization(keras.layers.BatchNormalization):
  """PyTorch's BatchNorm2d in train mode with `requires_grad=False` gamma and beta.

  In training it normalises with the batch's (biased) variance and updates the moving variance
  with the unbiased one, as `torch.nn.functional.batch_norm` does; Keras' own layer updates it
  with the biased variance. gamma and beta are created non-trainable, so no optimiser sees them,
  whatever `layer.trainable` is later set to; the layer itself stays trainable because Keras runs
  a non-trainable BatchNormalization in inference mode. The weights are those of
  `keras.layers.BatchNormalization`, in the same order, so weights copy between the two.

  Args:
    **kwargs: `keras.layers.BatchNormalization` arguments (axis must be -1; no renorm).

  Example:
    >>> bn = ReferenceBatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON)
    >>> _ = bn(keras.ops.ones((2, 3, 3, 4)), training=True)
    >>> bn.trainable_variables, round(float(bn.moving_mean[0]), 6)
    ([], 0.1)
  """

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    if self.axis != -1 or self.renorm:
      raise ValueError("ReferenceBatchNormalization supports axis=-1 without renorm only")

  def add_weight(self, *args, **kwargs):
    # gamma and beta: the reference freezes them (requires_grad = False); the moving statistics
    # are non-trainable anyway.
    kwargs["trainable"] = False
    return super().add_weight(*args, **kwargs)

  def call(self, inputs, training=None):
    if not training:
      return super().call(inputs, training=False)
    if len(inputs.shape) == 4:
      # A (b)float16 activation goes in as it is: the fused op reduces in float32 (its
      # statistics are float32), so the two casts of the activation per layer and direction
      # are spared. bf16 AdaptSegNet step, interleaved A/B (bench/compare_checkouts.py, AMD
      # EPYC with AVX512-BF16, 2 cores): s/step ratios 1.04, 1.12 on an idle machine.
      return ops.cast(self._fused_training_call(inputs), self.compute_dtype)
    # As Keras does: statistics in float32 even when the layer computes in (b)float16.
    return ops.cast(self._training_call(ops.cast(inputs, "float32")), self.compute_dtype)

  def _fused_training_call(self, x):
    # One FusedBatchNormV3 (forward and its gradient kernel) instead of Keras' moments and
    # elementwise ops: a smaller graph that traces faster (first step 51-57 s against 83-93 s,
    # bench/compare_checkouts.py on 2 CPUs; the later steps take the same time). With an
    # exponential_avg_factor below 1 it normalises with the biased batch variance and returns
    # running statistics moved towards the Bessel-corrected one: torch's update. The raw op
    # keeps epsilon 1e-5 (tf.compat.v1.nn.fused_batch_norm raises it to 1.001e-5 for cuDNN).
    outputs, running_mean, running_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=x, scale=ops.cast(self.gamma, "float32"), offset=ops.cast(self.beta, "float32"),
        mean=ops.cast(self.moving_mean, "float32"),
        variance=ops.cast(self.moving_variance, "float32"), epsilon=self.epsilon,
        exponential_avg_factor=1.0 - self.momentum, data_format="NHWC", is_training=True)
    self.moving_mean.assign(running_mean)
    self.moving_variance.assign(running_variance)
    return outputs

  def _training_call(self, x):
    mean, variance = ops.moments(x, axes=self._reduction_axes)
    count = ops.cast(ops.size(x), "float32") / x.shape[-1]
    # PyTorch stores the unbiased variance; with one value per channel (where PyTorch refuses to
    # train) the biased variance is 0 and so is this.
    unbiased = variance * count / ops.maximum(count - 1.0, 1.0)
    self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
    self.moving_variance.assign(
        self.moving_variance * self.momentum + unbiased * (1.0 - self.momentum))
    return ops.batch_normalization(x, mean, variance, axis=-1, offset=self.beta,
                                   scale=self.gamma, epsilon=self.epsilon)


def check_bn_mode(bn_mode: str) -> str:
  """Returns `bn_mode` if it is one of `BN_MODES`.

  Raises:
    ValueError: naming the known modes, for any other value.
  """
  if bn_mode not in BN_MODES:
    raise ValueError(f"unknown bn_mode {bn_mode!r}; known: {', '.join(BN_MODES)}")
  return bn_mode


def batch_norm(x, name: str, bn_mode: str):
  """Applies a BatchNorm with PyTorch's epsilon and momentum in mode `bn_mode`.

  Args:
    x: NHWC tensor.
    name: Layer name.
    bn_mode: One of `BN_MODES`.

  Returns:
    The normalised tensor.
  """
  options = {"epsilon": BN_EPSILON, "momentum": BN_MOMENTUM, "name": name}
  if check_bn_mode(bn_mode) == "reference":
    return ReferenceBatchNormalization(**options)(x)
  # A non-trainable Keras BatchNormalization runs in inference mode.
  return keras.layers.BatchNormalization(trainable=bn_mode == "train", **options)(x)
