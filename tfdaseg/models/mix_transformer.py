"""The Mix Transformer (MiT) encoder of SegFormer, B0..B5, as DAFormer uses it.

Reference: DAFormer mmseg/models/backbones/mix_transformer.py (from NVlabs/SegFormer). Four
stages; each is an overlapping patch embedding (a strided conv: 7x7 stride 4 for the first,
3x3 stride 2 for the others, padding kernel // 2, then LayerNorm), `depth` transformer blocks
and a LayerNorm, giving maps at strides 4, 8, 16 and 32. A block is
  x = x + DropPath(Attention(LN(x)));  x = x + DropPath(MixFFN(LN(x))),
with efficient self-attention (keys and values from the map reduced by a `sr_ratio` strided conv
and a LayerNorm) and the Mix-FFN (Linear, 3x3 depthwise conv, exact GELU, Linear; hidden = 4x).
Every tensor stays NHWC, so the height and width are those of the input at run time: any input
size works (e.g. 2048x1024 whole Cityscapes images), as in the reference, which passes H and W
along with its token sequences.

Layer names mirror the reference's module paths ("block3_0_attn" is `block3.0.attn`,
"patch_embed1_proj" is `patch_embed1.proj`), which the PyTorch weight import relies on.

Why not keras-hub's `MiTBackbone` (keras_hub/src/models/mit/, checked at 71453d0): its
attention and Mix-FFN recover the map from the token count as H = W = sqrt(N), so only square
maps work; its per-stage reshape uses static shapes, so the input size is fixed at construction;
attention and projection dropout are hard-coded to 0.1 (the reference's MiT uses 0); Mix-FFN
uses Keras' default tanh-approximated GELU (the reference: exact); the stage LayerNorms have
epsilon 1e-5 (reference 1e-6) and its DropPath draws from a stateful seed generator. Each of these
breaks weight parity or the 2048x1024 evaluation, so the encoder is written here.

Gradient checkpointing (`MitConfig.recompute`, ours): mmseg's ResNet backbones have `with_cp`,
but the reference's MiT (lhoyer/DAFormer mix_transformer.py) has no such option and neither
DAFormer's nor HRDA's configs recompute anything. With it, each block's attention and Mix-FFN run
under `tf.recompute_grad` in training: their inner activations (queries, keys and values, the
attention map, the 4x-wide Mix-FFN hidden maps) are recomputed in the backward pass instead of
stored. Only those two layers are wrapped, not the whole residual pair: the block's LayerNorms,
DropPaths and Adds stay top-level layers of the functional model, whose names the weight import
(`tfdaseg.models.torch_import`), `without_training_randomness` and HRDA's graph walk read, so a
model with and without recompute has the same layers, variables and checkpoints.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfdaseg.models.dropout import DropPath


@dataclasses.dataclass(frozen=True)
class MitConfig:
  """The sizes of one MiT variant (mix_transformer.py `mit_b0` ... `mit_b5`).

  Attributes:
    embed_dims: Channels of the four stages.
    num_heads: Attention heads per stage.
    depths: Transformer blocks per stage.
    sr_ratios: Spatial reduction of the keys and values per stage.
    mlp_ratio: Mix-FFN hidden width as a multiple of the stage's channels.
    recompute: Gradient checkpointing (ours; the reference has none, see the module docstring):
      in training, recompute each block's attention and Mix-FFN activations in the backward
      pass instead of storing them. Same outputs and gradients; less memory, one more forward
      of those layers per step. From the command line:
      `--model_options='{"encoder_options": {"recompute": true}}'`.
  """
  embed_dims: tuple[int, int, int, int]
  num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
  depths: tuple[int, int, int, int] = (2, 2, 2, 2)
  sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
  mlp_ratio: int = 4
  recompute: bool = False


# mix_transformer.py mit_b0..mit_b5: all have qkv_bias=True, LayerNorm eps 1e-6, mlp ratio 4.
MIT_CONFIGS = {
    "b0": MitConfig((32, 64, 160, 256)),
    "b1": MitConfig((64, 128, 320, 512)),
    "b2": MitConfig((64, 128, 320, 512), depths=(3, 4, 6, 3)),
    "b3": MitConfig((64, 128, 320, 512), depths=(3, 4, 18, 3)),
    "b4": MitConfig((64, 128, 320, 512), depths=(3, 8, 27, 3)),
    "b5": MitConfig((64, 128, 320, 512), depths=(3, 6, 40, 3)),
}
# mix_transformer.py MixVisionTransformer: drop_path_rate=0.1, raised linearly over all blocks.
DROP_PATH_RATE = 0.1
# Blocks and stage norms use `partial(nn.LayerNorm, eps=1e-6)`; the patch embeddings' and the
# attention's spatial-reduction LayerNorms are plain `nn.LayerNorm` (eps 1e-5).
BLOCK_EPSILON = 1e-6
TORCH_LAYER_NORM_EPSILON = 1e-5
# (kernel, stride) of the four overlapping patch embeddings; padding is kernel // 2.
PATCH_EMBEDDINGS = ((7, 4), (3, 2), (3, 2), (3, 2))

# _init_weights: Linear weights trunc_normal_(std=.02), whose cut-off is at +-2 in absolute
# value (100 std), so plain normal in effect; conv weights N(0, sqrt(2 / fan_out)) with
# fan_out = k * k * out / groups, which is Keras' fan_out for Conv2D and DepthwiseConv2D.
_DENSE_INIT = keras.initializers.RandomNormal(stddev=0.02)
_CONV_INIT = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


def _dense(units: int, name: str) -> keras.layers.Dense:
  return keras.layers.Dense(units, kernel_initializer=_DENSE_INIT, name=name)


def _maybe_recomputed(forward, x, recompute: bool, training):
  """`forward(x)`, under `tf.recompute_grad` when `recompute` and training (inference graphs
  and exports stay plain). `forward` calls only already-built sub-layers, whose variables
  recompute_grad finds and differentiates (it watches the variables the forward reads)."""
  if recompute and training:
    return tf.recompute_grad(forward)(x)
  return forward(x)


@keras.saving.register_keras_serializable(package="tfdaseg")
class MixAttention(keras.layers.Layer):
  """Efficient multi-head self-attention on an NHWC map (mix_transformer.py `Attention`).

  Queries come from every position; keys and values from the map reduced by a conv of kernel
  and stride `sr_ratio` plus a LayerNorm (none at ratio 1). Sub-layers: `q`, `kv` (keys then
  values, heads-major inside each, as the reference's reshape reads them), `proj`, and `sr`,
  `norm` when reducing.

  Args:
    dim: Channels of the input and output.
    num_heads: Attention heads (dim must divide evenly).
    sr_ratio: Spatial reduction of keys and values.
    recompute: Recompute the activations in the backward pass (`MitConfig.recompute`).
    **kwargs: Base `keras.layers.Layer` arguments.

  Example:
    >>> attention = MixAttention(dim=8, num_heads=2, sr_ratio=2)
    >>> tuple(attention(keras.ops.zeros((1, 6, 10, 8))).shape)
    (1, 6, 10, 8)
  """

  def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, recompute: bool = False,
               **kwargs):
    super().__init__(**kwargs)
    if dim % num_heads:
      raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
    self.dim, self.num_heads, self.sr_ratio = int(dim), int(num_heads), int(sr_ratio)
    self.recompute = bool(recompute)
    self.q = _dense(dim, "q")
    self.kv = _dense(2 * dim, "kv")
    self.proj = _dense(dim, "proj")
    if sr_ratio > 1:
      self.sr = keras.layers.Conv2D(dim, sr_ratio, strides=sr_ratio, padding="valid",
                                    kernel_initializer=_CONV_INIT, name="sr")
      self.norm = keras.layers.LayerNormalization(epsilon=TORCH_LAYER_NORM_EPSILON, name="norm")

  def build(self, input_shape):
    self.q.build(input_shape)
    reduced = input_shape
    if self.sr_ratio > 1:
      self.sr.build(input_shape)
      reduced = self.sr.compute_output_shape(input_shape)
      self.norm.build(reduced)
    self.kv.build(reduced)
    self.proj.build(input_shape)

  def call(self, x, training=None):
    return _maybe_recomputed(self._attend, x, self.recompute, training)

  def _attend(self, x):
    shape = ops.shape(x)
    batch, height, width = shape[0], shape[1], shape[2]
    head_dim = self.dim // self.num_heads
    # [B, N, heads, head_dim]: the layout of keras.ops.nn.dot_product_attention.
    query = ops.reshape(self.q(x), (batch, -1, self.num_heads, head_dim))
    context = self.norm(self.sr(x)) if self.sr_ratio > 1 else x
    kv = ops.reshape(self.kv(context), (batch, -1, 2, self.num_heads, head_dim))
    attended = ops.nn.dot_product_attention(query, kv[:, :, 0], kv[:, :, 1],
                                            scale=head_dim ** -0.5)
    return self.proj(ops.reshape(attended, (batch, height, width, self.dim)))

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update(dim=self.dim, num_heads=self.num_heads, sr_ratio=self.sr_ratio,
                  recompute=self.recompute)
    return config


@keras.saving.register_keras_serializable(package="tfdaseg")
class MixFFN(keras.layers.Layer):
  """The Mix-FFN on an NHWC map (mix_transformer.py `Mlp` with `DWConv`): `fc1`, a 3x3 depthwise
  conv with bias (`dwconv`), exact GELU, `fc2`.

  Args:
    dim: Channels of the input and output.
    hidden: Hidden channels (mlp ratio x dim).
    recompute: Recompute the activations in the backward pass (`MitConfig.recompute`).
    **kwargs: Base `keras.layers.Layer` arguments.
  """

  def __init__(self, dim: int, hidden: int, recompute: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.dim, self.hidden, self.recompute = int(dim), int(hidden), bool(recompute)
    self.fc1 = _dense(hidden, "fc1")
    self.dwconv = keras.layers.DepthwiseConv2D(3, padding="same",
                                               depthwise_initializer=_CONV_INIT, name="dwconv")
    self.fc2 = _dense(dim, "fc2")

  def build(self, input_shape):
    self.fc1.build(input_shape)
    hidden_shape = tuple(input_shape[:-1]) + (self.hidden,)
    self.dwconv.build(hidden_shape)
    self.fc2.build(hidden_shape)

  def call(self, x, training=None):
    return _maybe_recomputed(self._feed_forward, x, self.recompute, training)

  def _feed_forward(self, x):
    # Exact GELU: nn.GELU's default (keras' ops.gelu defaults to the tanh approximation).
    return self.fc2(ops.gelu(self.dwconv(self.fc1(x)), approximate=False))

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update(dim=self.dim, hidden=self.hidden, recompute=self.recompute)
    return config


def _layer_norm(epsilon: float, name: str) -> keras.layers.LayerNormalization:
  return keras.layers.LayerNormalization(epsilon=epsilon, name=name)


def _block(x, dim: int, num_heads: int, sr_ratio: int, hidden: int, drop_path: float,
           name: str, recompute: bool = False):
  """One transformer block (mix_transformer.py `Block`)."""
  branch = MixAttention(dim, num_heads, sr_ratio, recompute, name=f"{name}_attn")(
      _layer_norm(BLOCK_EPSILON, f"{name}_norm1")(x))
  x = keras.layers.Add(name=f"{name}_add1")(
      [x, DropPath(drop_path, name=f"{name}_drop_path1")(branch)])
  branch = MixFFN(dim, hidden, recompute, name=f"{name}_mlp")(_layer_norm(BLOCK_EPSILON, f"{name}_norm2")(x))
  return keras.layers.Add(name=f"{name}_add2")(
      [x, DropPath(drop_path, name=f"{name}_drop_path2")(branch)])


def drop_path_rates(depths, drop_path_rate: float) -> list[float]:
  """Per-block stochastic depth, linear from 0 to `drop_path_rate` over all blocks
  (mix_transformer.py: `torch.linspace(0, drop_path_rate, sum(depths))`)."""
  return [float(rate) for rate in np.linspace(0.0, drop_path_rate, sum(depths),
                                              dtype=np.float32)]


def mix_transformer(x, config: MitConfig, drop_path_rate: float = DROP_PATH_RATE) -> list:
  """Builds the MiT encoder on `x`.

  Args:
    x: NHWC image tensor, normalised as the encoder was trained (ImageNet mean and std, RGB).
    config: The variant (`MIT_CONFIGS`) or a smaller one for tests.
    drop_path_rate: Stochastic depth of the last block (reference 0.1).

  Returns:
    The four stage outputs (strides 4, 8, 16, 32 with `config.embed_dims` channels), NHWC.
  """
  rates = iter(drop_path_rates(config.depths, drop_path_rate))
  stages = []
  for stage, (dim, heads, depth, sr_ratio, (kernel, stride)) in enumerate(
      zip(config.embed_dims, config.num_heads, config.depths, config.sr_ratios,
          PATCH_EMBEDDINGS), start=1):
    x = keras.layers.ZeroPadding2D(kernel // 2, name=f"patch_embed{stage}_pad")(x)
    x = keras.layers.Conv2D(dim, kernel, strides=stride, padding="valid",
                            kernel_initializer=_CONV_INIT, name=f"patch_embed{stage}_proj")(x)
    x = _layer_norm(TORCH_LAYER_NORM_EPSILON, f"patch_embed{stage}_norm")(x)
    for index in range(depth):
      x = _block(x, dim, heads, sr_ratio, dim * config.mlp_ratio, next(rates),
                 name=f"block{stage}_{index}", recompute=config.recompute)
    x = _layer_norm(BLOCK_EPSILON, f"norm{stage}")(x)
    stages.append(x)
  return stages
