"""Initialises generator backbones from ImageNet weights in a LOCAL file: keras.applications `.h5`
files for the DeepLab-v2 generators, PyTorch files for the MiT ones.

Both kinds of file work: the legacy `.h5` files keras.applications downloads (layers by name) and
Keras 3 `.weights.h5` files (`model.save_weights`), because the file is loaded into the matching
keras.applications model first and copied from there, layer by layer:
  * VGG16: `blockB_convC` -> our layer of the same name. fc6, fc7 (3x3 dilated convs in DeepLab,
    dense layers in VGG16) and the head keep their initialisation, as in the reference.
  * ResNet101 (torchvision style, stride on the 3x3 conv; the kernels have the same shapes as our
    Caffe-style ones): `convS_blockB_K_conv/bn` -> `layer{S-1}_{B-1}_conv{K}/bn{K}`, `_0_` (the
    projection shortcut) -> `downsample_0/1`. Keras' convs have biases and its BatchNorm has
    epsilon 1.001e-5; both fold exactly into our bias-free conv + BatchNorm(eps 1e-5):
    moving_mean -= bias, moving_variance += 1.001e-5 - 1e-5.
The MiT generators (DAFormer, SegFormer) take the ImageNet-1k MiT checkpoints DAFormer starts
from: SegFormer's `mit_b5.pth` or Hugging Face's `nvidia/mit-b5` (`pytorch_model.bin` or
`model.safetensors`), read by `tfdaseg.models.torch_checkpoint` (no torch needed) and loaded
under the "mit_imagenet" layout (`tfdaseg.models.torch_import`): the encoder from the file, the
head fresh.
"""

import dataclasses
import re
from typing import Callable

import h5py
import keras
import numpy as np
from absl import logging

from tfdaseg.models.daformer import MIT_GENERATORS
from tfdaseg.models.torch_checkpoint import load_state_dict
from tfdaseg.models.torch_import import apply_layout, load_torch_state_dict
from tfdaseg.registry import Registry

IMAGENET_BACKBONES: Registry = Registry("ImageNet backbone")


@dataclasses.dataclass
class ImagenetInitReport:
  """What `load_imagenet_weights` did.

  Attributes:
    loaded: Our layers that received ImageNet weights.
    left_at_init: Our weight-carrying layers without an ImageNet counterpart.
    unused: keras.applications layers with weights (or PyTorch entries) that nothing took (e.g.
      the classifier).
  """
  loaded: list
  left_at_init: list
  unused: list

  def summary(self) -> str:
    """A one-line count plus the names of what was not matched."""
    return (f"ImageNet init: {len(self.loaded)} layers loaded; "
            f"{len(self.left_at_init)} left at initialisation {self.left_at_init}; "
            f"{len(self.unused)} ImageNet layers unused {self.unused}")


@dataclasses.dataclass(frozen=True)
class _Backbone:
  application: Callable[..., keras.Model]
  # keras.applications layer name -> our layer name, or None when it has no counterpart.
  rename: Callable[[str], str | None]
  # Whether our layers may stay at initialisation (True only for the non-backbone layers).
  new_layer: Callable[[str], bool]


@dataclasses.dataclass(frozen=True)
class _TorchBackbone:
  # The `tfdaseg.models.torch_import` layout of the ImageNet checkpoints.
  layout: str


def _vgg_rename(name: str) -> str | None:
  return name if re.fullmatch(r"block\d_conv\d", name) else None


_RESNET_NAME = re.compile(r"conv(\d)_block(\d+)_(\d)_(conv|bn)")


def _resnet_rename(name: str) -> str | None:
  if name in ("conv1_conv", "conv1_bn"):
    return {"conv1_conv": "conv1", "conv1_bn": "bn1"}[name]
  match = _RESNET_NAME.fullmatch(name)
  if not match:
    return None
  stage, block, index, kind = match.groups()
  prefix = f"layer{int(stage) - 1}_{int(block) - 1}"
  if index == "0":  # The projection shortcut.
    return f"{prefix}_downsample_{0 if kind == 'conv' else 1}"
  return f"{prefix}_{kind}{index}"


def _is_head(name: str) -> bool:
  return name.endswith("_head")


IMAGENET_BACKBONES.register("deeplab_v2_vgg16")(_Backbone(
    keras.applications.VGG16, _vgg_rename, lambda name: name in ("fc6", "fc7") or _is_head(name)))
for _name in ("deeplab_v2_resnet101_multi", "deeplab_v2_resnet101_single"):
  IMAGENET_BACKBONES.register(_name)(_Backbone(keras.applications.ResNet101, _resnet_rename,
                                               _is_head))
for _name in MIT_GENERATORS:
  IMAGENET_BACKBONES.register(_name)(_TorchBackbone("mit_imagenet"))


def has_top(path: str) -> bool:
  """Whether a keras.applications weights file includes the ImageNet classifier."""
  with h5py.File(path, "r") as f:
    group = f["model_weights"] if "model_weights" in f else f
    if "layer_names" in group.attrs:  # Legacy h5: layers by name.
      return "predictions" in [n.decode() if isinstance(n, bytes) else n
                               for n in group.attrs["layer_names"]]
    if "layers" in group:  # Keras 3 .weights.h5: layers by class, e.g. "dense_1".
      return any(name.startswith("dense") for name in group["layers"])
  raise ValueError(f"{path}: not a Keras weights file (no layer_names or layers group)")


def _fold_conv_bias(ours_bn: keras.layers.BatchNormalization, bias: np.ndarray,
                    theirs_bn: keras.layers.BatchNormalization) -> None:
  # BN(conv(x) + b) with their epsilon == our BN(conv(x)) with mean - b, variance + eps difference.
  ours_bn.moving_mean.assign(ours_bn.moving_mean.numpy() - bias)
  ours_bn.moving_variance.assign(ours_bn.moving_variance.numpy()
                                 + theirs_bn.epsilon - ours_bn.epsilon)


def _load_torch_backbone(generator: keras.Model, path: str, architecture: str,
                         layout: str) -> ImagenetInitReport:
  state = load_state_dict(path)
  try:
    report = load_torch_state_dict(generator, state, layout)
  except ValueError as e:
    raise ValueError(f"{path}: does not fit {architecture}: {e}") from None
  fed = {layer.name for layer in apply_layout(generator, layout).layers.values()}
  left = [layer.name for layer in generator.layers if layer.weights and layer.name not in fed]
  return ImagenetInitReport(sorted(fed), left, [key for key, _ in report.skipped])


def load_imagenet_weights(generator: keras.Model, path: str, architecture: str
                          ) -> ImagenetInitReport:
  """Copies ImageNet weights from a local file onto `generator`'s backbone.

  Args:
    generator: A generator built as `architecture` at full size (the default blocks and width;
      the MiT variant of the file).
    path: A keras.applications weights file for the matching network (VGG16 or ResNet101), with
      or without the classifier ("notop"); for a MiT generator, an ImageNet MiT checkpoint
      (`mit_bX.pth`, or Hugging Face's `.bin` / `.safetensors`).
    architecture: The generator's registered name.

  Returns:
    An `ImagenetInitReport` (also logged).

  Raises:
    ValueError: naming `path` when the file cannot be read, a backbone layer has no weights in
      the file or a shape differs (e.g. a tiny generator, another MiT variant).
  """
  backbone = IMAGENET_BACKBONES.get(architecture)
  if isinstance(backbone, _TorchBackbone):
    report = _load_torch_backbone(generator, path, architecture, backbone.layout)
    logging.info("%s", report.summary())
    return report
  try:
    source = backbone.application(weights=path, include_top=has_top(path))
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: cannot load as {backbone.application.__name__} weights ({e})") \
        from None
  ours = {layer.name: layer for layer in generator.layers if layer.weights}
  pairs, unused = [], []
  for layer in source.layers:
    if not layer.weights:
      continue
    target = backbone.rename(layer.name)
    if target in ours:
      pairs.append((layer, ours[target]))
    else:
      unused.append(layer.name)
  matched = {target.name for _, target in pairs}
  left = [name for name in ours if name not in matched]
  uncovered = [name for name in left if not backbone.new_layer(name)]
  problems = [f"no ImageNet weights for {uncovered[:5]}"] if uncovered else []
  for theirs, target in pairs:
    for a, b in zip(theirs.weights, target.weights):
      if tuple(a.shape) != tuple(b.shape):
        problems.append(f"{theirs.name} {a.path} {tuple(a.shape)} vs {b.path} {tuple(b.shape)}")
  if problems:
    raise ValueError(f"{path}: does not fit {architecture}: " + "; ".join(problems[:5]))

  folds = []
  for theirs, target in pairs:
    weights = theirs.get_weights()
    if isinstance(target, keras.layers.Conv2D) and not target.use_bias and len(weights) == 2:
      theirs_bn = source.get_layer(theirs.name[:-len("conv")] + "bn")
      folds.append((ours[backbone.rename(theirs_bn.name)], weights[1], theirs_bn))
      weights = weights[:1]
    target.set_weights(weights)
  # After the loop, so that each BatchNorm already holds its ImageNet statistics.
  for ours_bn, bias, theirs_bn in folds:
    _fold_conv_bias(ours_bn, bias, theirs_bn)
  report = ImagenetInitReport(sorted(matched), left, unused)
  logging.info("%s", report.summary())
  return report
