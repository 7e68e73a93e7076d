"""Loads PyTorch state dicts of the reference models (AdaptSegNet / ADVENT) into our Keras models.

Each architecture has a *layout*: which PyTorch module prefix feeds which Keras layer, and which
prefixes are classifier heads. Per layer type, a converter lists the PyTorch tensors and the Keras
variables they feed; conv kernels go OIHW -> HWIO. Everything is checked before anything is
assigned: a missing or unexpected key, or a shape mismatch, fails with the list of offenders. The
one exception, as in the reference's loader (it skips `layer5` when the class count differs),
is a head whose class count differs from the model's: it is skipped with a warning.
"""

import dataclasses
import re
from typing import Callable, Mapping

import keras
import numpy as np
from absl import logging

from tfdaseg.models.aspp_classifier import AsppClassifier
from tfdaseg.models.registry import build
from tfdaseg.models.torch_checkpoint import load_state_dict
from tfdaseg.registry import Registry

# Prefixes added by nn.DataParallel ("module.") and by the DeepLab COCO init ("Scale.").
_WRAPPER_PREFIXES = re.compile(r"^(?:module\.|Scale\.)+")
# BatchNorm's step counter (PyTorch >= 0.4) has no Keras counterpart and does not affect outputs.
IGNORED_SUFFIXES = (".num_batches_tracked",)


@dataclasses.dataclass(frozen=True)
class Layout:
  """How an architecture's PyTorch modules map onto the Keras model's layers.

  Attributes:
    layers: PyTorch module prefix -> Keras layer.
    heads: The prefixes that are classifier heads (skipped when their class count differs).
  """
  layers: Mapping[str, keras.layers.Layer]
  heads: frozenset


@dataclasses.dataclass
class ImportReport:
  """What an import did.

  Attributes:
    loaded: PyTorch keys assigned to variables.
    skipped: (PyTorch key, reason) of checkpoint entries deliberately not loaded.
    left_at_init: Head prefixes the checkpoint does not have (their weights keep their init).
    ignored: Checkpoint entries without a Keras counterpart (BatchNorm step counters).
  """
  loaded: list = dataclasses.field(default_factory=list)
  skipped: list = dataclasses.field(default_factory=list)
  left_at_init: list = dataclasses.field(default_factory=list)
  ignored: list = dataclasses.field(default_factory=list)

  def summary(self) -> str:
    """A human-readable multi-line report."""
    lines = [f"loaded {len(self.loaded)} tensors"]
    if self.ignored:
      lines.append(f"ignored {len(self.ignored)} entries without a Keras counterpart "
                   f"(e.g. {self.ignored[0]})")
    lines += [f"skipped {key}: {reason}" for key, reason in self.skipped]
    lines += [f"left at initialisation: {prefix} (not in the checkpoint)"
              for prefix in self.left_at_init]
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class _Entry:
  """One PyTorch tensor and the Keras variable it feeds."""
  key: str
  variable: keras.Variable
  # A conv kernel: PyTorch stores OIHW, Keras HWIO.
  kernel: bool = False

  def to_keras(self, value: np.ndarray) -> np.ndarray:
    return np.transpose(value, (2, 3, 1, 0)) if self.kernel else value

  @property
  def torch_shape(self) -> tuple:
    shape = tuple(self.variable.shape)
    return (shape[3], shape[2], shape[0], shape[1]) if self.kernel else shape


def _conv_entries(prefix: str, layer: keras.layers.Conv2D) -> list[_Entry]:
  entries = [_Entry(f"{prefix}.weight", layer.kernel, kernel=True)]
  if layer.use_bias:
    entries.append(_Entry(f"{prefix}.bias", layer.bias))
  return entries


def _batch_norm_entries(prefix: str, layer: keras.layers.BatchNormalization) -> list[_Entry]:
  return [_Entry(f"{prefix}.weight", layer.gamma), _Entry(f"{prefix}.bias", layer.beta),
          _Entry(f"{prefix}.running_mean", layer.moving_mean),
          _Entry(f"{prefix}.running_var", layer.moving_variance)]


def _classifier_entries(prefix: str, layer: AsppClassifier) -> list[_Entry]:
  entries = []
  for index, (kernel, bias) in enumerate(zip(layer.kernels, layer.biases)):
    entries.append(_Entry(f"{prefix}.conv2d_list.{index}.weight", kernel, kernel=True))
    entries.append(_Entry(f"{prefix}.conv2d_list.{index}.bias", bias))
  return entries


LAYER_CONVERTERS: dict[type, Callable[[str, keras.layers.Layer], list[_Entry]]] = {
    keras.layers.Conv2D: _conv_entries,
    keras.layers.BatchNormalization: _batch_norm_entries,
    AsppClassifier: _classifier_entries,
}

LAYOUTS: Registry = Registry("PyTorch checkpoint layout")

# Keras names of the Caffe ResNet's layers are the reference's module paths with "_" for ".".
_RESNET_LAYER = re.compile(r"^(conv1|bn1|layer\d+_\d+_(?:conv\d|bn\d|downsample_[01]))$")


def _resnet_layout(model: keras.Model, heads: Mapping[str, str]) -> Layout:
  layers = {layer.name.replace("_", "."): layer for layer in model.layers
            if _RESNET_LAYER.match(layer.name) and type(layer) in LAYER_CONVERTERS}
  layers.update({prefix: model.get_layer(name) for prefix, name in heads.items()})
  return Layout(layers, frozenset(heads))


@LAYOUTS.register("deeplab_v2_resnet101_multi")
def _resnet_multi_layout(model: keras.Model) -> Layout:
  # deeplab_multi.py: layer5 is the head on layer3 (pred1), layer6 the head on layer4 (pred2).
  return _resnet_layout(model, {"layer5": "aux_head", "layer6": "main_head"})


@LAYOUTS.register("deeplab_v2_resnet101_single")
def _resnet_single_layout(model: keras.Model) -> Layout:
  # deeplab.py (Res_Deeplab) and the DeepLab COCO init: layer5 is the head on layer4.
  return _resnet_layout(model, {"layer5": "main_head"})


# DeeplabVGG keeps torchvision's `features` indices minus pool4 (index 23): conv5_x move to
# 23/25/27, then fc6 and fc7 are appended at 29 and 31 (ReLUs in between).
_VGG_FEATURE_INDICES = {
    "block1_conv1": 0, "block1_conv2": 2, "block2_conv1": 5, "block2_conv2": 7,
    "block3_conv1": 10, "block3_conv2": 12, "block3_conv3": 14, "block4_conv1": 17,
    "block4_conv2": 19, "block4_conv3": 21, "block5_conv1": 23, "block5_conv2": 25,
    "block5_conv3": 27, "fc6": 29, "fc7": 31,
}


@LAYOUTS.register("deeplab_v2_vgg16")
def _vgg_layout(model: keras.Model) -> Layout:
  layers = {f"features.{index}": model.get_layer(name)
            for name, index in _VGG_FEATURE_INDICES.items()}
  layers["classifier"] = model.get_layer("main_head")
  return Layout(layers, frozenset({"classifier"}))


def _discriminator_layout(model: keras.Model) -> Layout:
  names = ("conv1", "conv2", "conv3", "conv4", "classifier")
  return Layout({name: model.get_layer(name) for name in names}, frozenset())


LAYOUTS.register("output_space_discriminator")(_discriminator_layout)
LAYOUTS.register("feature_discriminator")(_discriminator_layout)


def normalise_keys(state_dict: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list]:
  """Strips wrapper prefixes ("module.", "Scale.") and drops entries without a Keras counterpart.

  Args:
    state_dict: PyTorch key -> array.

  Returns:
    (normalised key -> array, the dropped keys).
  """
  normalised, ignored = {}, []
  for key, value in state_dict.items():
    key = _WRAPPER_PREFIXES.sub("", key)
    if key.endswith(IGNORED_SUFFIXES):
      ignored.append(key)
    else:
      normalised[key] = value
  return normalised, ignored


def _head_of(key: str, heads: frozenset) -> str | None:
  return next((head for head in heads if key.startswith(head + ".")), None)


def _entries(layout: Layout) -> list[_Entry]:
  return [entry for prefix, layer in layout.layers.items()
          for entry in LAYER_CONVERTERS[type(layer)](prefix, layer)]


def expected_torch_shapes(model: keras.Model, architecture: str) -> dict[str, tuple]:
  """Returns PyTorch key -> shape that a checkpoint of `model` holds (conv kernels in OIHW).

  Args:
    model: A model built as `architecture`.
    architecture: A registered layout name.

  Returns:
    Keys in the model's layer order.
  """
  return {entry.key: entry.torch_shape for entry in _entries(LAYOUTS.get(architecture)(model))}


def _listing(keys: list) -> str:
  return f"{keys[:10]}{' ...' if len(keys) > 10 else ''}"


def load_torch_state_dict(model: keras.Model, state_dict: Mapping[str, np.ndarray],
                          architecture: str, allow_missing_heads: bool = False) -> ImportReport:
  """Assigns a PyTorch state dict of the reference architecture to `model`.

  Args:
    model: A model built as `architecture` (same blocks / widths as the checkpoint).
    state_dict: PyTorch key -> array (`torch_checkpoint.load_state_dict`).
    architecture: A registered layout name (the model registry name).
    allow_missing_heads: Accept checkpoints without some classifier head (e.g. the DeepLab COCO
      init, which has one head, loaded into the multi-level model); those heads keep their init.

  Returns:
    An `ImportReport`.

  Raises:
    ValueError: on missing or unexpected keys or mismatched shapes; nothing is assigned then.
  """
  layout = LAYOUTS.get(architecture)(model)
  state, ignored = normalise_keys(state_dict)
  entries = _entries(layout)
  report = ImportReport(ignored=ignored)
  problems = []

  unexpected = sorted(set(state) - {entry.key for entry in entries})
  if unexpected:
    problems.append(f"unexpected keys {_listing(unexpected)}")
  absent = [entry.key for entry in entries if entry.key not in state]
  for head in sorted(layout.heads):
    head_keys = [entry.key for entry in entries if _head_of(entry.key, layout.heads) == head]
    if allow_missing_heads and all(key in absent for key in head_keys):
      report.left_at_init.append(head)
  missing = sorted(k for k in absent if _head_of(k, layout.heads) not in report.left_at_init)
  if missing:
    problems.append(f"missing keys {_listing(missing)}")

  skipped_heads, assignments = set(), []
  for entry in entries:
    if entry.key not in state:
      continue
    value = entry.to_keras(np.asarray(state[entry.key]))
    if value.shape == tuple(entry.variable.shape):
      assignments.append((entry, value))
      continue
    head = _head_of(entry.key, layout.heads)
    # Only the class count (the last Keras axis) may differ, and only in a head.
    if head is not None and value.shape[:-1] == tuple(entry.variable.shape)[:-1]:
      skipped_heads.add(head)
      continue
    problems.append(f"{entry.key}: shape {tuple(state[entry.key].shape)} does not fit "
                    f"{entry.variable.path} {entry.torch_shape} (PyTorch layout)")
  if problems:
    raise ValueError(f"cannot load the state dict into {architecture}: " + "; ".join(problems))

  for entry, value in assignments:
    if _head_of(entry.key, layout.heads) not in skipped_heads:
      entry.variable.assign(value.astype(entry.variable.dtype))
      report.loaded.append(entry.key)
  for head in sorted(skipped_heads):
    report.skipped += [(key, "class count differs from the model's")
                       for key in sorted(state) if _head_of(key, layout.heads) == head]
    logging.warning("skipped head %s of the checkpoint: its class count differs", head)
  for head in report.left_at_init:
    logging.warning("head %s is not in the checkpoint; it keeps its initialisation", head)
  return report


def import_torch_checkpoint(path: str, architecture: str, allow_missing_heads: bool = False,
                            **model_options) -> tuple[keras.Model, ImportReport]:
  """Builds `architecture` and loads a `.pth` file into it.

  Args:
    path: The PyTorch checkpoint.
    architecture: Registered model and layout name.
    allow_missing_heads: See `load_torch_state_dict`.
    **model_options: Passed to `tfdaseg.models.build` (num_classes, blocks, aspp_compat, ...).

  Returns:
    (model, report).

  Raises:
    ValueError: naming `path` when the checkpoint does not fit the model.
  """
  state_dict = load_state_dict(path)
  model = build(architecture, **model_options)
  try:
    report = load_torch_state_dict(model, state_dict, architecture, allow_missing_heads)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from None
  return model, report
