"""DeepLab-v2's classifier: a sum of dilated 3x3 convs (the reference's `Classifier_Module`)."""

from typing import Sequence

import keras

from tfdaseg.models.stride_one_conv import stride_one_conv2d

# DeepLab-v2 ASPP rates, used by AdaptSegNet / ADVENT for every head.
DEEPLAB_V2_RATES = (6, 12, 18, 24)

# How many branches (in rate order) each compatibility mode sums. AdaptSegNet's
# Classifier_Module returns inside its loop, so only the rate-6 and rate-12 branches count;
# its released checkpoints were trained that way. ADVENT's copy sums all four.
ASPP_COMPAT_SUMMED_BRANCHES = {"adaptsegnet": 2, "full": None}


def summed_branches(aspp_compat: str, num_rates: int) -> int:
  """Returns how many branches `aspp_compat` sums.

  Args:
    aspp_compat: A key of `ASPP_COMPAT_SUMMED_BRANCHES`.
    num_rates: Number of branches the classifier has.

  Raises:
    ValueError: for an unknown mode.
  """
  if aspp_compat not in ASPP_COMPAT_SUMMED_BRANCHES:
    raise ValueError(f"unknown aspp_compat {aspp_compat!r}; known: "
                     f"{', '.join(sorted(ASPP_COMPAT_SUMMED_BRANCHES))}")
  count = ASPP_COMPAT_SUMMED_BRANCHES[aspp_compat]
  return num_rates if count is None else min(count, num_rates)


@keras.saving.register_keras_serializable(package="tfdaseg")
class AsppClassifier(keras.layers.Layer):
  """Sum of 3x3 convolutions with bias at several dilation rates, padding = rate.

  Every branch has weights (so checkpoints with all four import losslessly), but only the first
  `summed_branches(aspp_compat, len(rates))` are summed. The others' weights are created
  non-trainable, so optimisers never see variables without gradients, whatever
  `layer.trainable` is later set to.

  Args:
    num_classes: Output channels.
    rates: Dilation rates of the branches, in the reference's order.
    aspp_compat: "adaptsegnet" (sum the first two branches, as the AdaptSegNet reference code
      does) or "full" (sum all).
    **kwargs: Base `keras.layers.Layer` arguments.

  Example:
    >>> head = AsppClassifier(num_classes=5, aspp_compat="full")
    >>> tuple(head(keras.ops.zeros((1, 9, 9, 16))).shape)
    (1, 9, 9, 5)
  """

  def __init__(self, num_classes: int, rates: Sequence[int] = DEEPLAB_V2_RATES,
               aspp_compat: str = "adaptsegnet", **kwargs):
    super().__init__(**kwargs)
    self.num_classes = int(num_classes)
    self.rates = tuple(int(r) for r in rates)
    self.aspp_compat = aspp_compat
    self.num_summed = summed_branches(aspp_compat, len(self.rates))

  def build(self, input_shape):
    channels = input_shape[-1]
    for index in range(len(self.rates)):
      trainable = index < self.num_summed
      # Each weight is an attribute of its own: tf.train.Checkpoint does not track variables
      # held in a Python list, so checkpoints would silently lack the heads.
      # The reference initialises each branch's kernel with N(0, 0.01); the bias starts at zero.
      setattr(self, f"kernel_{index}", self.add_weight(
          name=f"conv2d_list_{index}_kernel", shape=(3, 3, channels, self.num_classes),
          initializer=keras.initializers.RandomNormal(stddev=0.01), trainable=trainable))
      setattr(self, f"bias_{index}", self.add_weight(
          name=f"conv2d_list_{index}_bias", shape=(self.num_classes,), initializer="zeros",
          trainable=trainable))

  @property
  def kernels(self) -> list:
    """The branches' kernels, in rate order."""
    return [getattr(self, f"kernel_{index}") for index in range(len(self.rates))]

  @property
  def biases(self) -> list:
    """The branches' biases, in rate order."""
    return [getattr(self, f"bias_{index}") for index in range(len(self.rates))]

  def call(self, inputs):
    total = None
    for kernel, bias, rate in zip(self.kernels[:self.num_summed], self.biases, self.rates):
      # PyTorch's padding = rate is "same"'s here. Inside the kernel it skips the padded taps:
      # at 512x1024 the heads' oneDNN primitives took 551 ms per float32 forward + backward
      # against 964 ms on a materialised padding (stride_one_conv's docstring).
      # Where that would send oneDNN's filter gradient to its gemm fallback (rate 12 at the
      # bench's 320x160), stride_one_conv2d takes that gradient alone on another path (a padded
      # copy or a matmul), and it drops taps that only read padding (rate 24 there).
      out = stride_one_conv2d(inputs, kernel, rate, "same") + bias
      total = out if total is None else total + out
    return total

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.num_classes,)

  def get_config(self):
    config = super().get_config()
    config.update(num_classes=self.num_classes, rates=list(self.rates),
                  aspp_compat=self.aspp_compat)
    return config
