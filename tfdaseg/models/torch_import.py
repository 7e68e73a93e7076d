"""Loads PyTorch state dicts of the reference models (AdaptSegNet / ADVENT) into our Keras models.

A *layout* describes a kind of checkpoint: which PyTorch module prefix feeds which Keras layer,
which prefixes are classifier heads, and which prefixes are dropped. A checkpoint's own model
has the layout of the same name; the DeepLab-v2 initialisation files have the layout
"deeplab_resnet_init", which fits both ResNet generators; the ImageNet MiT encoders (SegFormer's
`mit_bX.pth` and Hugging Face's `nvidia/mit-bX`) have "mit_imagenet", which fits every MiT
generator. Per layer type, a converter lists the PyTorch tensors and the Keras variables they
feed; conv kernels go OIHW -> HWIO, Linear weights are transposed.

Everything is checked before anything is assigned: a missing or unexpected key, or a shape
mismatch, fails with the list of offenders. Not loaded, and reported by name: a head whose class
count differs from the model's (as the reference's loaders skip `layer5` to train 19 classes),
and the layout's dropped prefixes. The model's weights that nothing fed keep their fresh
initialisation and are reported by name too, so the model is complete either way.
"""

import dataclasses
import re
from typing import Callable, Iterable, Mapping

import keras
import numpy as np
from absl import logging

from tfdaseg.models.aspp_classifier import AsppClassifier
from tfdaseg.models.daformer import MIT_GENERATORS
from tfdaseg.models.hrda import ATTENTION_PREFIX
from tfdaseg.models.mix_transformer import MixAttention, MixFFN
from tfdaseg.models.registry import build
from tfdaseg.models.torch_checkpoint import CheckpointError, load_state_dict
from tfdaseg.registry import Registry

# Prefixes added by nn.DataParallel ("module.") and by the DeepLab-v2 init files ("Scale.").
_WRAPPER_PREFIXES = re.compile(r"^(?:module\.|Scale\.)+")
# BatchNorm's step counter (PyTorch >= 0.4) has no Keras counterpart and does not affect outputs.
IGNORED_SUFFIXES = (".num_batches_tracked",)
HEAD_CLASS_COUNT_DIFFERS = "class count differs from the model's"


@dataclasses.dataclass(frozen=True)
class Layout:
  """How a kind of PyTorch checkpoint maps onto a Keras model's layers.

  Attributes:
    layers: PyTorch module prefix -> Keras layer.
    heads: The prefixes that are classifier heads (skipped when their class count differs).
    dropped: Prefix -> why: checkpoint modules that are never loaded, whatever their shapes.
    rename: Applied to the (normalised) state dict first: another naming of the same modules
      (Hugging Face's) -> this layout's.
  """
  layers: Mapping[str, keras.layers.Layer]
  heads: frozenset = frozenset()
  dropped: Mapping[str, str] = dataclasses.field(default_factory=dict)
  rename: Callable[[dict], dict] | None = None


@dataclasses.dataclass
class ImportReport:
  """What an import did.

  Attributes:
    loaded: PyTorch keys assigned to variables.
    skipped: (PyTorch key, reason) of checkpoint entries deliberately not loaded.
    left_at_init: Paths of the model's variables that nothing fed (they keep their init).
    ignored: Checkpoint entries without a Keras counterpart (BatchNorm step counters).
  """
  loaded: list = dataclasses.field(default_factory=list)
  skipped: list = dataclasses.field(default_factory=list)
  left_at_init: list = dataclasses.field(default_factory=list)
  ignored: list = dataclasses.field(default_factory=list)

  def summary(self) -> str:
    """A human-readable report naming every skipped tensor and every variable left at init."""
    lines = [f"loaded {len(self.loaded)} tensors"]
    if self.ignored:
      lines.append(f"ignored {len(self.ignored)} entries without a Keras counterpart "
                   f"(e.g. {self.ignored[0]})")
    lines += [f"skipped {key}: {reason}" for key, reason in self.skipped]
    lines += [f"left at initialisation: {path} (not in the checkpoint)"
              for path in self.left_at_init]
    return "\n".join(lines)


# Axis order that turns a PyTorch weight into the Keras one: conv kernels OIHW -> HWIO, Linear
# weights [out, in] -> [in, out], depthwise kernels [C, 1, H, W] -> [H, W, C, 1].
_PERMUTATIONS = {"conv": (2, 3, 1, 0), "linear": (1, 0), "depthwise": (2, 3, 0, 1)}


@dataclasses.dataclass(frozen=True)
class _Entry:
  """One PyTorch tensor and the Keras variable it feeds."""
  key: str
  variable: keras.Variable
  # A key of `_PERMUTATIONS`, or None when both frameworks store the same array.
  permutation: str | None = None

  def to_keras(self, value: np.ndarray) -> np.ndarray:
    return np.transpose(value, _PERMUTATIONS[self.permutation]) if self.permutation else value

  @property
  def torch_shape(self) -> tuple:
    shape = tuple(self.variable.shape)
    if not self.permutation:
      return shape
    order = _PERMUTATIONS[self.permutation]
    return tuple(shape[order.index(axis)] for axis in range(len(order)))


def _weight_and_bias(prefix: str, layer: keras.layers.Layer, weight: keras.Variable,
                     permutation: str) -> list[_Entry]:
  entries = [_Entry(f"{prefix}.weight", weight, permutation)]
  if layer.use_bias:
    entries.append(_Entry(f"{prefix}.bias", layer.bias))
  return entries


def _conv_entries(prefix: str, layer: keras.layers.Conv2D) -> list[_Entry]:
  return _weight_and_bias(prefix, layer, layer.kernel, "conv")


def _depthwise_entries(prefix: str, layer: keras.layers.DepthwiseConv2D) -> list[_Entry]:
  return _weight_and_bias(prefix, layer, layer.kernel, "depthwise")


def _dense_entries(prefix: str, layer: keras.layers.Dense) -> list[_Entry]:
  return _weight_and_bias(prefix, layer, layer.kernel, "linear")


def _layer_norm_entries(prefix: str, layer: keras.layers.LayerNormalization) -> list[_Entry]:
  return [_Entry(f"{prefix}.weight", layer.gamma), _Entry(f"{prefix}.bias", layer.beta)]


def _attention_entries(prefix: str, layer: MixAttention) -> list[_Entry]:
  # mix_transformer.py Attention: q, kv, proj and, when reducing, sr and norm.
  entries = (_dense_entries(f"{prefix}.q", layer.q) + _dense_entries(f"{prefix}.kv", layer.kv)
             + _dense_entries(f"{prefix}.proj", layer.proj))
  if layer.sr_ratio > 1:
    entries += _conv_entries(f"{prefix}.sr", layer.sr)
    entries += _layer_norm_entries(f"{prefix}.norm", layer.norm)
  return entries


def _mix_ffn_entries(prefix: str, layer: MixFFN) -> list[_Entry]:
  # mix_transformer.py Mlp: fc1, DWConv (whose conv is `dwconv.dwconv`), fc2.
  return (_dense_entries(f"{prefix}.fc1", layer.fc1)
          + _depthwise_entries(f"{prefix}.dwconv.dwconv", layer.dwconv)
          + _dense_entries(f"{prefix}.fc2", layer.fc2))


def _batch_norm_entries(prefix: str, layer: keras.layers.BatchNormalization) -> list[_Entry]:
  return [_Entry(f"{prefix}.weight", layer.gamma), _Entry(f"{prefix}.bias", layer.beta),
          _Entry(f"{prefix}.running_mean", layer.moving_mean),
          _Entry(f"{prefix}.running_var", layer.moving_variance)]


def _classifier_entries(prefix: str, layer: AsppClassifier) -> list[_Entry]:
  entries = []
  for index, (kernel, bias) in enumerate(zip(layer.kernels, layer.biases)):
    entries.append(_Entry(f"{prefix}.conv2d_list.{index}.weight", kernel, "conv"))
    entries.append(_Entry(f"{prefix}.conv2d_list.{index}.bias", bias))
  return entries


# Layer class -> converter; subclasses (e.g. ReferenceBatchNormalization) use their base's.
# DepthwiseConv2D is not a Conv2D subclass in Keras 3.
LAYER_CONVERTERS: dict[type, Callable[[str, keras.layers.Layer], list[_Entry]]] = {
    keras.layers.Conv2D: _conv_entries,
    keras.layers.DepthwiseConv2D: _depthwise_entries,
    keras.layers.Dense: _dense_entries,
    keras.layers.BatchNormalization: _batch_norm_entries,
    keras.layers.LayerNormalization: _layer_norm_entries,
    AsppClassifier: _classifier_entries,
    MixAttention: _attention_entries,
    MixFFN: _mix_ffn_entries,
}


def _converter(layer: keras.layers.Layer) -> Callable[[str, keras.layers.Layer], list[_Entry]]:
  for layer_type, converter in LAYER_CONVERTERS.items():
    if isinstance(layer, layer_type):
      return converter
  raise TypeError(f"no PyTorch converter for layer {layer.name} ({type(layer).__name__})")


LAYOUTS: Registry = Registry("PyTorch checkpoint layout")

# Keras names of the Caffe ResNet's layers are the reference's module paths with "_" for ".".
_RESNET_LAYER = re.compile(r"^(conv1|bn1|layer\d+_\d+_(?:conv\d|bn\d|downsample_[01]))$")


def _resnet_backbone(model: keras.Model) -> dict[str, keras.layers.Layer]:
  return {layer.name.replace("_", "."): layer for layer in model.layers
          if _RESNET_LAYER.match(layer.name)}


def _resnet_layout(model: keras.Model, heads: Mapping[str, str]) -> Layout:
  layers = _resnet_backbone(model)
  layers.update({prefix: model.get_layer(name) for prefix, name in heads.items()})
  return Layout(layers, frozenset(heads))


@LAYOUTS.register("deeplab_v2_resnet101_multi")
def _resnet_multi_layout(model: keras.Model) -> Layout:
  # deeplab_multi.py: layer5 is the head on layer3 (pred1), layer6 the head on layer4 (pred2).
  return _resnet_layout(model, {"layer5": "aux_head", "layer6": "main_head"})


@LAYOUTS.register("deeplab_v2_resnet101_single")
def _resnet_single_layout(model: keras.Model) -> Layout:
  # AdaptSegNet's deeplab.py (Res_Deeplab): layer5 is the head on layer4.
  return _resnet_layout(model, {"layer5": "main_head"})


@LAYOUTS.register("deeplab_resnet_init")
def _resnet_init_layout(model: keras.Model) -> Layout:
  # The DeepLab-v2 init files (AdaptSegNet's DeepLab_resnet_pretrained_init-f81d91e8.pth,
  # ADVENT's DeepLab_resnet_pretrained_imagenet.pth) hold the backbone and one classifier,
  # layer5 on layer4, for other classes. Both references drop it and start their heads afresh:
  # AdaptSegNet train_gta2cityscapes_multi.py:193-201 (when training 19 classes), ADVENT
  # advent/scripts/train.py:96-102 (always).
  backbone = _resnet_backbone(model)
  if not backbone:
    raise ValueError("it has no DeepLab-v2 ResNet backbone")
  return Layout(backbone, dropped={
      "layer5": "the initialisation's classifier, dropped as the references do"})


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
  return Layout({name: model.get_layer(name) for name in names})


LAYOUTS.register("output_space_discriminator")(_discriminator_layout)
LAYOUTS.register("feature_discriminator")(_discriminator_layout)


# Keras layer name -> PyTorch module path: (pattern, replacement) pairs, the first match wins.
_MIT_NAMES = (
    (r"^patch_embed(\d)_(proj|norm)$", r"patch_embed\1.\2"),
    (r"^block(\d)_(\d+)_(norm1|norm2|attn|mlp)$", r"block\1.\2.\3"),
    (r"^norm(\d)$", r"norm\1"),
)
# daformer_head.py DAFormerHead with the ASPPWrapper fusion (mmcv ConvModule: conv + bn;
# DepthwiseSeparableConvModule: depthwise_conv + pointwise_conv).
_DAFORMER_HEAD_NAMES = (
    (r"^decode_head_embed_(\d)$", r"decode_head.embed_layers.\1.proj"),
    (r"^decode_head_aspp_(\d)$", r"decode_head.fuse_layer.aspp_modules.\1.conv"),
    (r"^decode_head_aspp_(\d)_bn$", r"decode_head.fuse_layer.aspp_modules.\1.bn"),
    (r"^decode_head_aspp_(\d)_(depthwise|pointwise)$",
     r"decode_head.fuse_layer.aspp_modules.\1.\2_conv.conv"),
    (r"^decode_head_aspp_(\d)_(depthwise|pointwise)_bn$",
     r"decode_head.fuse_layer.aspp_modules.\1.\2_conv.bn"),
    (r"^decode_head_bottleneck$", "decode_head.fuse_layer.bottleneck.conv"),
    (r"^decode_head_bottleneck_bn$", "decode_head.fuse_layer.bottleneck.bn"),
    (r"^decode_head_classifier$", "decode_head.conv_seg"),
)
# segformer_head.py SegFormerHead.
_SEGFORMER_HEAD_NAMES = (
    (r"^decode_head_embed_(\d)$", r"decode_head.linear_c.\1.proj"),
    (r"^decode_head_fuse$", "decode_head.linear_fuse.conv"),
    (r"^decode_head_fuse_bn$", "decode_head.linear_fuse.bn"),
    (r"^decode_head_classifier$", "decode_head.linear_pred"),
)
# HRDA hrda_head.py HRDAHead.scale_attention: DAFormerHead with a 1x1 ConvModule fusion.
_HRDA_ATTENTION_NAMES = (
    (rf"^{ATTENTION_PREFIX}_embed_(\d)$", r"decode_head.scale_attention.embed_layers.\1.proj"),
    (rf"^{ATTENTION_PREFIX}_fuse$", "decode_head.scale_attention.fuse_layer.conv"),
    (rf"^{ATTENTION_PREFIX}_fuse_bn$", "decode_head.scale_attention.fuse_layer.bn"),
    (rf"^{ATTENTION_PREFIX}_classifier$", "decode_head.scale_attention.conv_seg"),
)
_MIT_HEADS = {"daformer": (_DAFORMER_HEAD_NAMES, "decode_head.conv_seg", {}),
              "segformer": (_SEGFORMER_HEAD_NAMES, "decode_head.linear_pred", {
                  # mmseg's BaseDecodeHead creates conv_seg; SegFormerHead never calls it.
                  "decode_head.conv_seg": "BaseDecodeHead's classifier, unused by SegFormerHead"})}


def _renamed_layers(model: keras.Model, names: tuple, prefix: str = ""
                    ) -> dict[str, keras.layers.Layer]:
  layers = {}
  for layer in model.layers:
    for pattern, replacement in names:
      if re.match(pattern, layer.name):
        layers[prefix + re.sub(pattern, replacement, layer.name)] = layer
        break
  return layers


def _mit_encoder(model: keras.Model, prefix: str = "") -> dict[str, keras.layers.Layer]:
  encoder = _renamed_layers(model, _MIT_NAMES, prefix)
  if not encoder:
    raise ValueError("it has no MiT encoder")
  return encoder


# The checkpoints DAFormer and HRDA publish are their UDA module's state dict (mmseg/models/uda/
# uda_decorator.py, dacs.py): the student under "model.", the EMA teacher and the feature
# distance's ImageNet copy beside it. Their tools/test.py evaluates the student (load_checkpoint
# revise_keys ('model.', '')).
_UDA_STUDENT = "model."
_UDA_OTHER_NETWORKS = {"ema_model": "the EMA teacher (the student, model.*, is imported)",
                       "imnet_model": "the feature distance's frozen ImageNet copy"}


def uda_student(state: dict) -> dict:
  """A DAFormer/HRDA UDA checkpoint's student ("model.*") under the segmentor's own names; other
  state dicts pass through unchanged.

  Args:
    state: Normalised PyTorch key -> array.

  Returns:
    The renamed state dict (the teacher's and ImageNet copy's keys kept, to be dropped).
  """
  if not any(key.startswith(_UDA_STUDENT) for key in state):
    return state
  return {key[len(_UDA_STUDENT):] if key.startswith(_UDA_STUDENT) else key: value
          for key, value in state.items()}


def _under_hrda_head(names: tuple) -> tuple:
  return tuple((pattern, replacement.replace("decode_head.", "decode_head.head.", 1))
               for pattern, replacement in names)


def _mit_generator_layout(model: keras.Model, architecture: str) -> Layout:
  # An mmseg EncoderDecoder's state dict (DAFormer's and SegFormer's checkpoints): the encoder
  # under "backbone.", the head under "decode_head."; an HRDAEncoderDecoder's (a generator with
  # --hrda) has the head under "decode_head.head." and the scale attention beside it.
  if model.name != architecture:
    raise ValueError(f"it is a {model.name}")
  names, classifier, dropped = _MIT_HEADS[architecture.split("_")[0]]
  heads = {classifier}
  if any(layer.name.startswith(ATTENTION_PREFIX) for layer in model.layers):
    names = _under_hrda_head(names) + _HRDA_ATTENTION_NAMES
    heads = {classifier.replace("decode_head.", "decode_head.head.", 1),
             "decode_head.scale_attention.conv_seg"}
    dropped = {key.replace("decode_head.", "decode_head.head.", 1): why
               for key, why in dropped.items()}
  layers = _mit_encoder(model, "backbone.")
  layers.update(_renamed_layers(model, names))
  return Layout(layers, frozenset(heads), {**dropped, **_UDA_OTHER_NETWORKS}, rename=uda_student)


for _architecture in MIT_GENERATORS:
  LAYOUTS.register(_architecture)(
      lambda model, architecture=_architecture: _mit_generator_layout(model, architecture))

# Hugging Face `Segformer*` names (transformers' convert_segformer_original_to_pytorch.py
# `rename_keys`, encoder_only) -> SegFormer's original ones.
_HUGGINGFACE_NAMES = (
    (r"^segformer\.encoder\.patch_embeddings\.(\d)\.proj\.", "patch_embed{0}.proj."),
    (r"^segformer\.encoder\.patch_embeddings\.(\d)\.layer_norm\.", "patch_embed{0}.norm."),
    (r"^segformer\.encoder\.block\.(\d)\.(\d+)\.layer_norm_(\d)\.", "block{0}.{1}.norm{2}."),
    (r"^segformer\.encoder\.block\.(\d)\.(\d+)\.attention\.self\.query\.", "block{0}.{1}.attn.q."),
    (r"^segformer\.encoder\.block\.(\d)\.(\d+)\.attention\.self\.kv\.", "block{0}.{1}.attn.kv."),
    (r"^segformer\.encoder\.block\.(\d)\.(\d+)\.attention\.self\.sr\.", "block{0}.{1}.attn.sr."),
    (r"^segformer\.encoder\.block\.(\d)\.(\d+)\.attention\.self\.layer_norm\.",
     "block{0}.{1}.attn.norm."),
    (r"^segformer\.encoder\.block\.(\d)\.(\d+)\.attention\.output\.dense\.",
     "block{0}.{1}.attn.proj."),
    (r"^segformer\.encoder\.block\.(\d)\.(\d+)\.mlp\.dense(\d)\.", "block{0}.{1}.mlp.fc{2}."),
    (r"^segformer\.encoder\.block\.(\d)\.(\d+)\.mlp\.dwconv\.dwconv\.",
     "block{0}.{1}.mlp.dwconv.dwconv."),
    (r"^segformer\.encoder\.layer_norm\.(\d)\.", "norm{0}."),
    (r"^classifier\.", "head."),
)
_HUGGINGFACE_KEY = re.compile(r"^(.*\.attention\.self\.)key\.(weight|bias)$")


def _merge_keys_and_values(state: dict) -> dict:
  """Hugging Face splits SegFormer's `kv` Linear into `key` (the first half of its outputs) and
  `value` (read_in_k_v); rejoins each complete pair as `kv`, leaving the others as they are."""
  merged = dict(state)
  for key in state:
    match = _HUGGINGFACE_KEY.match(key)
    value_key = match and f"{match[1]}value.{match[2]}"
    if match and value_key in state:
      merged[f"{match[1]}kv.{match[2]}"] = np.concatenate(
          [merged.pop(key), merged.pop(value_key)], axis=0)
  return merged


def _rename_key(key: str) -> str:
  for pattern, replacement in _HUGGINGFACE_NAMES:
    match = re.match(pattern, key)
    if match:
      groups = list(match.groups())
      if groups:  # The first is Hugging Face's 0-based stage; SegFormer counts from 1.
        groups[0] = str(int(groups[0]) + 1)
      return replacement.format(*groups) + key[match.end():]
  return key


def huggingface_to_segformer(state: dict) -> dict:
  """Renames a Hugging Face `nvidia/mit-bX` state dict to SegFormer's `mit_bX.pth` names.

  Args:
    state: PyTorch key -> array; SegFormer-named entries pass through unchanged.

  Returns:
    The renamed state dict; keys it does not know keep their names.
  """
  return {_rename_key(key): value for key, value in _merge_keys_and_values(state).items()}


@LAYOUTS.register("mit_imagenet")
def _mit_imagenet_layout(model: keras.Model) -> Layout:
  # The ImageNet-1k MiT checkpoints: SegFormer's mit_b0.pth ... mit_b5.pth (the encoder's own
  # names, plus the classifier `head`) or Hugging Face's nvidia/mit-b0 ... mit-b5 (.bin or
  # .safetensors, renamed first). The generator's head keeps its fresh initialisation, as
  # DAFormer's (its `init_weights` loads the file into the backbone only, strict=False).
  return Layout(_mit_encoder(model), dropped={"head": "the ImageNet classifier"},
                rename=huggingface_to_segformer)


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


def _prefix_of(key: str, prefixes: Iterable[str]) -> str | None:
  return next((prefix for prefix in prefixes if key.startswith(prefix + ".")), None)


def apply_layout(model: keras.Model, layout: str) -> Layout:
  """Applies a registered layout to a model.

  Args:
    model: The Keras model.
    layout: A registered layout name.

  Returns:
    The layout's mapping onto `model`'s layers.

  Raises:
    ValueError: when the model lacks a layer the layout needs (e.g. a multi-level layout
      applied to a single-level model).
  """
  try:
    return LAYOUTS.get(layout)(model)
  except ValueError as e:
    raise ValueError(f"layout {layout} does not fit model {model.name}: {e}") from None


def _entries(layout: Layout) -> list[_Entry]:
  return [entry for prefix, layer in layout.layers.items()
          for entry in _converter(layer)(prefix, layer)]


def expected_torch_shapes(model: keras.Model, layout: str) -> dict[str, tuple]:
  """Returns PyTorch key -> shape that a checkpoint of `layout` for `model` holds (conv kernels
  in OIHW), dropped prefixes aside.

  Args:
    model: A model that the layout fits.
    layout: A registered layout name.

  Returns:
    Keys in the model's layer order.
  """
  return {entry.key: entry.torch_shape for entry in _entries(apply_layout(model, layout))}


def _listing(keys: list) -> str:
  return f"{keys[:10]}{' ...' if len(keys) > 10 else ''}"


def _plan(mapping: Layout, state: Mapping[str, np.ndarray]) -> tuple[list, list, list]:
  """Matches normalised checkpoint entries with the layout's variables, assigning nothing.

  Returns:
    (assignments: (entry, Keras-shaped value) to assign, skipped: (key, reason) of entries not
    loaded, problems: why the checkpoint does not fit; empty when it does).
  """
  skipped = [(key, mapping.dropped[prefix]) for key in sorted(state)
             if (prefix := _prefix_of(key, mapping.dropped)) is not None]
  state = {key: value for key, value in state.items() if _prefix_of(key, mapping.dropped) is None}
  entries = _entries(mapping)
  problems = []
  unexpected = sorted(set(state) - {entry.key for entry in entries})
  if unexpected:
    problems.append(f"unexpected keys {_listing(unexpected)}")
  missing = [entry.key for entry in entries if entry.key not in state]
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
    head = _prefix_of(entry.key, mapping.heads)
    # Only the class count (the last Keras axis) may differ, and only in a head.
    if head is not None and value.shape[:-1] == tuple(entry.variable.shape)[:-1]:
      skipped_heads.add(head)
      continue
    problems.append(f"{entry.key}: shape {tuple(state[entry.key].shape)} does not fit "
                    f"{entry.variable.path} {entry.torch_shape} (PyTorch layout)")
  assignments = [(entry, value) for entry, value in assignments
                 if _prefix_of(entry.key, mapping.heads) not in skipped_heads]
  skipped += [(key, HEAD_CLASS_COUNT_DIFFERS) for key in sorted(state)
              if _prefix_of(key, mapping.heads) in skipped_heads]
  return assignments, skipped, problems


def _fitting_layouts(model: keras.Model, state: Mapping[str, np.ndarray]) -> list[str]:
  """The registered layouts under which `state` would load into `model`."""
  fitting = []
  for name in LAYOUTS.names():
    try:
      mapping = apply_layout(model, name)
    except ValueError:  # The layout is for another kind of model.
      continue
    if not _plan(mapping, _renamed(mapping, state))[2]:
      fitting.append(name)
  return fitting


def _renamed(mapping: Layout, state: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
  return mapping.rename(dict(state)) if mapping.rename else state


def load_torch_state_dict(model: keras.Model, state_dict: Mapping[str, np.ndarray],
                          layout: str) -> ImportReport:
  """Assigns a PyTorch state dict of the given layout to `model`.

  Args:
    model: A model that the layout fits, with the checkpoint's blocks and widths.
    state_dict: PyTorch key -> array (`torch_checkpoint.load_state_dict`).
    layout: A registered layout name: the checkpoint's model registry name, or
      "deeplab_resnet_init" for the DeepLab-v2 init files, "mit_imagenet" for the ImageNet MiT
      encoders.

  Returns:
    An `ImportReport`.

  Raises:
    ValueError: on missing or unexpected keys or mismatched shapes, naming the layouts that
      would fit; nothing is assigned then.
  """
  state, ignored = normalise_keys(state_dict)
  mapping = apply_layout(model, layout)
  assignments, skipped, problems = _plan(mapping, _renamed(mapping, state))
  if problems:
    fitting = _fitting_layouts(model, state)
    hint = f"; it fits layout {', '.join(fitting)}" if fitting else ""
    raise ValueError(f"cannot load the state dict as {layout}: {'; '.join(problems)}{hint}")
  for entry, value in assignments:
    entry.variable.assign(value.astype(entry.variable.dtype))
  fed = {id(entry.variable) for entry, _ in assignments}
  report = ImportReport(loaded=[entry.key for entry, _ in assignments], skipped=skipped,
                        left_at_init=[v.path for v in model.weights if id(v) not in fed],
                        ignored=ignored)
  for key, reason in report.skipped:
    logging.warning("skipped %s of the checkpoint: %s", key, reason)
  for path in report.left_at_init:
    logging.warning("%s is not in the checkpoint: it keeps its initialisation", path)
  return report


def import_torch_checkpoint(path: str, architecture: str, layout: str | None = None,
                            **model_options) -> tuple[keras.Model, ImportReport]:
  """Builds `architecture` and loads a PyTorch checkpoint (`.pth`, `.bin`, `.safetensors`) into it.

  Args:
    path: The PyTorch checkpoint.
    architecture: Registered model name.
    layout: The checkpoint's layout (see `load_torch_state_dict`); the architecture's own when
      None.
    **model_options: Passed to `tfdaseg.models.build` (num_classes, blocks, aspp_compat, ...).

  Returns:
    (model, report): the complete model (what the checkpoint lacks keeps its initialisation)
    and what was loaded, skipped and left.

  Raises:
    CheckpointError: naming `path`, when the file is not a readable checkpoint or does not fit
      the model.
    ValueError, TypeError: for model options the architecture does not take.
  """
  state_dict = load_state_dict(path)
  model = build(architecture, **model_options)
  try:
    report = load_torch_state_dict(model, state_dict, layout or architecture)
  except ValueError as e:
    raise CheckpointError(path, str(e)) from None
  return model, report
