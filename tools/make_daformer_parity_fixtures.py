"""Writes the PyTorch parity fixtures of the MiT generators (run where torch is installed;
tfdaseg is not needed and not imported).

The PyTorch modules below are the reference's, copied from DAFormer
(mmseg/models/backbones/mix_transformer.py; mmseg/models/decode_heads/daformer_head.py,
segformer_head.py, aspp_head.py, sep_aspp_head.py, decode_head.py) with mmcv's ConvModule and
DepthwiseSeparableConvModule and timm's DropPath written out, so that their state dicts carry
the reference's key names. Inputs are Caffe-preprocessed images (tfdaseg's generator input),
turned into the reference's RGB ImageNet normalisation before the network, as the Keras model's
first layer does. Fixtures (tests/models/test_daformer_parity.py reads them):
  * `daformer_tiny`, `segformer_tiny`: a small MiT (non-square input, every stage, depth 2 in
    one) with either head, weights from `torch_parity_weights` (BatchNorm statistics random
    too), saved as an mmseg EncoderDecoder state dict (`backbone.*`, `decode_head.*`); the
    input, the four stage outputs and the logits (NHWC, eval mode).
  * `mit_imagenet_tiny`: the encoder alone plus an ImageNet-style classifier `head`, in the
    three formats of the ImageNet MiT checkpoints: SegFormer's `.pth` names, Hugging Face's
    `.bin` and `.safetensors` (transformers' convert_segformer_original_to_pytorch.py renaming,
    `kv` split into `key` and `value`); the stage outputs.
  * `daformer_mit_b0_full`: MiT-B0 with DAFormer's full-size head; only the seeds and the
    logits and features are kept (the test regenerates the weights from the seed).

Usage (rewrites only these fixtures and daformer_manifest.json; the `.pth`/`.bin` bytes differ
from run to run, their tensors do not):
  /work/torchvenv/bin/python -m tools.make_daformer_parity_fixtures \
      --output_dir=tests/fixtures/torch_parity
"""

import argparse
import json
import os
import re

import numpy as np
import safetensors.numpy
import torch
import torch.nn.functional as F
from torch import nn

from tools.torch_parity_weights import deterministic_input, deterministic_state_dict

CAFFE_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)
IMAGENET_RGB_MEAN = (123.675, 116.28, 103.53)
IMAGENET_RGB_STD = (58.395, 57.12, 57.375)
# mix_transformer.py mit_b0.
MIT_B0 = {"embed_dims": [32, 64, 160, 256], "num_heads": [1, 2, 5, 8], "depths": [2, 2, 2, 2],
          "sr_ratios": [8, 4, 2, 1]}
TINY_MIT = {"embed_dims": [4, 8, 12, 16], "num_heads": [1, 2, 3, 4], "depths": [1, 2, 1, 1],
            "sr_ratios": [8, 4, 2, 1]}
IMAGENET_CLASSES = 10


# --- mix_transformer.py -------------------------------------------------------------------------


class DropPath(nn.Module):
  """timm's DropPath (identity in eval mode, which is all the fixtures run)."""

  def __init__(self, drop_prob):
    super().__init__()
    self.drop_prob = drop_prob

  def forward(self, x):
    if self.drop_prob == 0.0 or not self.training:
      return x
    keep = 1 - self.drop_prob
    mask = (keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype)).floor()
    return x.div(keep) * mask


class DWConv(nn.Module):

  def __init__(self, dim):
    super().__init__()
    self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

  def forward(self, x, H, W):
    B, N, C = x.shape
    x = x.transpose(1, 2).contiguous().view(B, C, H, W)
    x = self.dwconv(x)
    return x.flatten(2).transpose(1, 2).contiguous()


class Mlp(nn.Module):

  def __init__(self, in_features, hidden_features):
    super().__init__()
    self.fc1 = nn.Linear(in_features, hidden_features)
    self.dwconv = DWConv(hidden_features)
    self.act = nn.GELU()
    self.fc2 = nn.Linear(hidden_features, in_features)

  def forward(self, x, H, W):
    return self.fc2(self.act(self.dwconv(self.fc1(x), H, W)))


class Attention(nn.Module):

  def __init__(self, dim, num_heads, sr_ratio):
    super().__init__()
    self.num_heads = num_heads
    self.scale = (dim // num_heads) ** -0.5
    self.q = nn.Linear(dim, dim, bias=True)
    self.kv = nn.Linear(dim, dim * 2, bias=True)
    self.proj = nn.Linear(dim, dim)
    self.sr_ratio = sr_ratio
    if sr_ratio > 1:
      self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
      self.norm = nn.LayerNorm(dim)

  def forward(self, x, H, W):
    B, N, C = x.shape
    q = self.q(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
    if self.sr_ratio > 1:
      x_ = x.permute(0, 2, 1).reshape(B, C, H, W)
      x_ = self.norm(self.sr(x_).reshape(B, C, -1).permute(0, 2, 1))
      kv = self.kv(x_).reshape(B, -1, 2, self.num_heads, C // self.num_heads).permute(
          2, 0, 3, 1, 4)
    else:
      kv = self.kv(x).reshape(B, -1, 2, self.num_heads, C // self.num_heads).permute(
          2, 0, 3, 1, 4)
    k, v = kv[0], kv[1]
    attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
    x = (attn @ v).transpose(1, 2).reshape(B, N, C)
    return self.proj(x)


class Block(nn.Module):

  def __init__(self, dim, num_heads, sr_ratio, drop_path):
    super().__init__()
    self.norm1 = nn.LayerNorm(dim, eps=1e-6)
    self.attn = Attention(dim, num_heads, sr_ratio)
    self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
    self.norm2 = nn.LayerNorm(dim, eps=1e-6)
    self.mlp = Mlp(dim, dim * 4)

  def forward(self, x, H, W):
    x = x + self.drop_path(self.attn(self.norm1(x), H, W))
    return x + self.drop_path(self.mlp(self.norm2(x), H, W))


class OverlapPatchEmbed(nn.Module):

  def __init__(self, patch_size, stride, in_chans, embed_dim):
    super().__init__()
    self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride,
                          padding=patch_size // 2)
    self.norm = nn.LayerNorm(embed_dim)

  def forward(self, x):
    x = self.proj(x)
    _, _, H, W = x.shape
    return self.norm(x.flatten(2).transpose(1, 2)), H, W


class MixVisionTransformer(nn.Module):
  """MixVisionTransformer with qkv_bias=True, LayerNorm eps 1e-6 (every mit_bX), without the
  unused constructor arguments; `head` is the ImageNet classifier of the ImageNet checkpoints."""

  def __init__(self, embed_dims, num_heads, depths, sr_ratios, drop_path_rate=0.1,
               imagenet_classes=0):
    super().__init__()
    dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]
    cur, in_chans = 0, 3
    for stage in range(4):
      patch, stride = (7, 4) if stage == 0 else (3, 2)
      setattr(self, f"patch_embed{stage + 1}",
              OverlapPatchEmbed(patch, stride, in_chans, embed_dims[stage]))
      setattr(self, f"block{stage + 1}", nn.ModuleList(
          Block(embed_dims[stage], num_heads[stage], sr_ratios[stage], dpr[cur + i])
          for i in range(depths[stage])))
      setattr(self, f"norm{stage + 1}", nn.LayerNorm(embed_dims[stage], eps=1e-6))
      cur, in_chans = cur + depths[stage], embed_dims[stage]
    if imagenet_classes:
      self.head = nn.Linear(embed_dims[3], imagenet_classes)

  def forward(self, x):
    B, outs = x.shape[0], []
    for stage in range(1, 5):
      x, H, W = getattr(self, f"patch_embed{stage}")(x)
      for blk in getattr(self, f"block{stage}"):
        x = blk(x, H, W)
      x = getattr(self, f"norm{stage}")(x)
      x = x.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()
      outs.append(x)
    return outs


# --- mmcv ConvModule / DepthwiseSeparableConvModule, mmseg decode heads -------------------------


class ConvModule(nn.Module):
  """conv (no bias: a norm follows) + BatchNorm (`bn`) + ReLU, mmcv's default order."""

  def __init__(self, in_channels, out_channels, kernel_size, padding=0, dilation=1, groups=1):
    super().__init__()
    self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding,
                          dilation=dilation, groups=groups, bias=False)
    self.bn = nn.BatchNorm2d(out_channels)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


class DepthwiseSeparableConvModule(nn.Module):

  def __init__(self, in_channels, out_channels, kernel_size, dilation, padding):
    super().__init__()
    self.depthwise_conv = ConvModule(in_channels, in_channels, kernel_size, padding=padding,
                                     dilation=dilation, groups=in_channels)
    self.pointwise_conv = ConvModule(in_channels, out_channels, 1)

  def forward(self, x):
    return self.pointwise_conv(self.depthwise_conv(x))


class DepthwiseSeparableASPPModule(nn.ModuleList):
  """aspp_head.py ASPPModule with sep_aspp_head.py's depthwise-separable dilated branches."""

  def __init__(self, dilations, in_channels, channels):
    super().__init__()
    for dilation in dilations:
      if dilation == 1:
        self.append(ConvModule(in_channels, channels, 1))
      else:
        self.append(DepthwiseSeparableConvModule(in_channels, channels, 3, dilation=dilation,
                                                 padding=dilation))

  def forward(self, x):
    return [module(x) for module in self]


class ASPPWrapper(nn.Module):
  """daformer_head.py ASPPWrapper with sep=True, pool=False, no context layer."""

  def __init__(self, in_channels, channels, dilations):
    super().__init__()
    self.aspp_modules = DepthwiseSeparableASPPModule(dilations, in_channels, channels)
    self.bottleneck = ConvModule(len(dilations) * channels, channels, 3, padding=1)

  def forward(self, x):
    return self.bottleneck(torch.cat(self.aspp_modules(x), dim=1))


class MLP(nn.Module):

  def __init__(self, input_dim, embed_dim):
    super().__init__()
    self.proj = nn.Linear(input_dim, embed_dim)

  def forward(self, x):
    return self.proj(x.flatten(2).transpose(1, 2).contiguous())


def _resize(x, size):
  return F.interpolate(x, size, mode="bilinear", align_corners=False)


class DAFormerHead(nn.Module):
  """daformer_head.py DAFormerHead as configured by daformer_sepaspp_mitb5.py."""

  def __init__(self, in_channels, embed_dim, channels, num_classes, dilations=(1, 6, 12, 18)):
    super().__init__()
    self.embed_layers = nn.ModuleDict(
        {str(i): MLP(c, embed_dim) for i, c in enumerate(in_channels)})
    self.fuse_layer = ASPPWrapper(embed_dim * len(in_channels), channels, dilations)
    self.dropout = nn.Dropout2d(0.1)
    self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)

  def forward(self, x):
    n = x[-1].shape[0]
    os_size = x[0].size()[2:]
    _c = {}
    for i in range(len(x)):
      _c[i] = self.embed_layers[str(i)](x[i]).permute(0, 2, 1).contiguous().reshape(
          n, -1, x[i].shape[2], x[i].shape[3])
      if _c[i].size()[2:] != os_size:
        _c[i] = _resize(_c[i], os_size)
    return self.conv_seg(self.dropout(self.fuse_layer(torch.cat(list(_c.values()), dim=1))))


class SegFormerHead(nn.Module):
  """segformer_head.py SegFormerHead with conv_kernel_size 1; `conv_seg` is BaseDecodeHead's,
  created with `channels` inputs and never used."""

  def __init__(self, in_channels, embed_dim, num_classes, channels=128):
    super().__init__()
    self.linear_c = nn.ModuleDict({str(i): MLP(c, embed_dim) for i, c in enumerate(in_channels)})
    self.linear_fuse = ConvModule(embed_dim * len(in_channels), embed_dim, 1)
    self.linear_pred = nn.Conv2d(embed_dim, num_classes, kernel_size=1)
    self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
    self.dropout = nn.Dropout2d(0.1)

  def forward(self, x):
    n = x[-1].shape[0]
    _c = {}
    for i in range(len(x)):
      _c[i] = self.linear_c[str(i)](x[i]).permute(0, 2, 1).contiguous().reshape(
          n, -1, x[i].shape[2], x[i].shape[3])
      if i != 0:
        _c[i] = _resize(_c[i], x[0].size()[2:])
    return self.linear_pred(self.dropout(self.linear_fuse(torch.cat(list(_c.values()), dim=1))))


class EncoderDecoder(nn.Module):
  """mmseg's EncoderDecoder: `backbone` and `decode_head`, whose names prefix the state dict."""

  def __init__(self, mit, head, head_options):
    super().__init__()
    self.backbone = MixVisionTransformer(**mit)
    head_class = {"daformer": DAFormerHead, "segformer": SegFormerHead}[head]
    self.decode_head = head_class(mit["embed_dims"], **head_options)

  def forward(self, x):
    stages = self.backbone(x)
    return stages, self.decode_head(stages)


# --- fixtures -----------------------------------------------------------------------------------


def normalise(caffe_nhwc: np.ndarray) -> torch.Tensor:
  """Caffe-preprocessed BGR NHWC -> the reference's input: RGB, (x - mean) / std, NCHW."""
  rgb = (caffe_nhwc + np.asarray(CAFFE_BGR_MEAN, np.float32))[..., ::-1]
  normalised = (rgb - np.asarray(IMAGENET_RGB_MEAN, np.float32)) / np.asarray(IMAGENET_RGB_STD,
                                                                               np.float32)
  return torch.from_numpy(np.ascontiguousarray(normalised, np.float32)).permute(0, 3, 1, 2)


def _fill(model, seed):
  state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
  weights = deterministic_state_dict({k: tuple(v.shape) for k, v in state.items()}, seed)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
  return model.eval()


def _nhwc(tensor):
  return tensor.detach().permute(0, 2, 3, 1).numpy()


def _stage_outputs(stages):
  return {f"stage{i}": _nhwc(stage) for i, stage in enumerate(stages, start=1)}


def to_huggingface(state):
  """SegFormer's ImageNet `mit_bX.pth` names -> Hugging Face's `nvidia/mit-bX`, as transformers'
  convert_segformer_original_to_pytorch.py (`rename_keys` with encoder_only, `read_in_k_v`)."""
  renamed = {}
  for key, value in state.items():
    if not key.startswith("head"):
      key = "segformer.encoder." + key
    if "patch_embed" in key:
      idx = key[key.find("patch_embed") + len("patch_embed")]
      key = key.replace(f"patch_embed{idx}", f"patch_embeddings.{int(idx) - 1}")
    key = key.replace("norm", "layer_norm")
    if "segformer.encoder.layer_norm" in key:
      idx = key[key.find("segformer.encoder.layer_norm") + len("segformer.encoder.layer_norm")]
      key = key.replace(f"layer_norm{idx}", f"layer_norm.{int(idx) - 1}")
    key = key.replace("layer_norm1", "layer_norm_1").replace("layer_norm2", "layer_norm_2")
    if "block" in key:
      idx = key[key.find("block") + len("block")]
      key = key.replace(f"block{idx}", f"block.{int(idx) - 1}")
    key = key.replace("attn.q", "attention.self.query")
    key = key.replace("attn.proj", "attention.output.dense")
    key = key.replace("attn", "attention.self")
    key = key.replace("fc1", "dense1").replace("fc2", "dense2")
    if key.startswith("head"):
      key = key.replace("head", "classifier")
    renamed[key] = value
  for key in [k for k in renamed if re.search(r"attention\.self\.kv\.", k)]:
    value = renamed.pop(key)
    half = value.shape[0] // 2
    renamed[key.replace(".kv.", ".key.")] = value[:half].clone()
    renamed[key.replace(".kv.", ".value.")] = value[half:].clone()
  return renamed


def _generator_fixture(name, head, mit, head_options, shape, seed, output_dir, keep_weights):
  model = _fill(EncoderDecoder(mit, head, head_options), seed)
  image = deterministic_input(shape, 100 + seed, "image")
  with torch.no_grad():
    stages, logits = model(normalise(image))
  outputs = {"logits": _nhwc(logits), "features": _nhwc(stages[-1])}
  checkpoints = []
  if keep_weights:
    outputs.update(_stage_outputs(stages), input=image)
    checkpoints.append(f"{name}.pth")
    torch.save(model.state_dict(), os.path.join(output_dir, checkpoints[-1]))
  np.savez_compressed(os.path.join(output_dir, f"{name}.npz"), **outputs)
  print(name, {k: v.shape for k, v in outputs.items()})
  return {"architecture": f"{head}_mit_b0", "mit": mit, "head_options": head_options,
          "seed": seed, "input": {"shape": list(shape), "seed": 100 + seed, "kind": "image"},
          "checkpoints": checkpoints, "outputs": f"{name}.npz",
          "output_keys": sorted(set(outputs) - {"input"})}


def _imagenet_fixture(name, mit, shape, seed, output_dir):
  model = _fill(MixVisionTransformer(**mit, imagenet_classes=IMAGENET_CLASSES), seed)
  image = deterministic_input(shape, 100 + seed, "image")
  with torch.no_grad():
    outputs = _stage_outputs(model(normalise(image)))
  outputs["input"] = image
  np.savez_compressed(os.path.join(output_dir, f"{name}.npz"), **outputs)
  state = model.state_dict()
  huggingface = to_huggingface(state)
  files = {"segformer_pth": f"{name}.pth", "huggingface_bin": f"{name}_hf.bin",
           "huggingface_safetensors": f"{name}_hf.safetensors"}
  torch.save(state, os.path.join(output_dir, files["segformer_pth"]))
  torch.save(huggingface, os.path.join(output_dir, files["huggingface_bin"]))
  safetensors.numpy.save_file({k: v.numpy() for k, v in huggingface.items()},
                              os.path.join(output_dir, files["huggingface_safetensors"]))
  print(name, {k: v.shape for k, v in outputs.items()}, sorted(files.values()))
  return {"mit": mit, "seed": seed, "checkpoints": files, "outputs": f"{name}.npz",
          "output_keys": sorted(set(outputs) - {"input"})}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--output_dir", default="tests/fixtures/torch_parity")
  args = parser.parse_args()
  os.makedirs(args.output_dir, exist_ok=True)
  torch.manual_seed(0)
  # Non-square, not a multiple of 32: stage sizes 13x19, 7x10, 4x5, 2x3.
  shape = (1, 50, 74, 3)
  tiny_head = {"embed_dim": 8, "num_classes": 5}
  manifest = {
      "torch_version": torch.__version__,
      "generators": {
          "daformer_tiny": _generator_fixture(
              "daformer_tiny", "daformer", TINY_MIT, {**tiny_head, "channels": 8}, shape, 40,
              args.output_dir, keep_weights=True),
          "segformer_tiny": _generator_fixture(
              "segformer_tiny", "segformer", TINY_MIT, tiny_head, shape, 41, args.output_dir,
              keep_weights=True),
          "daformer_mit_b0_full": _generator_fixture(
              "daformer_mit_b0_full", "daformer", MIT_B0,
              {"embed_dim": 256, "channels": 256, "num_classes": 19}, (1, 64, 96, 3), 42,
              args.output_dir, keep_weights=False),
      },
      "imagenet": {"mit_imagenet_tiny": _imagenet_fixture("mit_imagenet_tiny", TINY_MIT, shape,
                                                          43, args.output_dir)},
  }
  with open(os.path.join(args.output_dir, "daformer_manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2, sort_keys=True)
    f.write("\n")


if __name__ == "__main__":
  main()
