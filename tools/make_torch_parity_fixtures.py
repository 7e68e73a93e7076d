"""Writes the PyTorch parity fixtures of tests/models (run where torch is installed; tfdaseg is not
needed and not imported).

The PyTorch models below are an independent re-implementation of the AdaptSegNet reference
architectures (model/deeplab_multi.py, deeplab.py, deeplab_vgg.py, discriminator.py), including its
quirks: max pooling with ceil_mode=True, the stride on the bottleneck's first 1x1 conv, and the
classifier that returns inside its loop (only rates 6 and 12 summed). For each fixture it saves the
state dict and input (tiny models) or only the seeds (full-size models: weights and input from
`torch_parity_weights`), and the eval-mode outputs (NHWC). Besides:
  * train-mode fixtures: one forward of a tiny model in train mode, as the reference trains
    (`model.train()`), and every BatchNorm's running statistics after it;
  * DeepLab initialisation fixtures: a tiny checkpoint in the key layout of the DeepLab-v2 init
    files (AdaptSegNet's DeepLab_resnet_pretrained_init-f81d91e8.pth, ADVENT's
    DeepLab_resnet_pretrained_imagenet.pth), and its backbone's eval-mode features.

Usage (all fixtures are rewritten; the `.pth` files differ bytewise from run to run, their
tensors do not):
  /work/torchvenv/bin/python -m tools.make_torch_parity_fixtures \
      --output_dir=tests/fixtures/torch_parity
"""

import argparse
import json
import os

import numpy as np
import torch
from torch import nn

from tools.torch_parity_weights import deterministic_input, deterministic_state_dict

RATES = (6, 12, 18, 24)
SUMMED_BRANCHES = {"adaptsegnet": 2, "full": 4}


class Classifier(nn.Module):
  """DeepLab-v2 classifier; "adaptsegnet" reproduces the reference's early return."""

  def __init__(self, in_channels, num_classes, aspp_compat):
    super().__init__()
    self.conv2d_list = nn.ModuleList(
        nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r, bias=True) for r in RATES)
    self.summed = SUMMED_BRANCHES[aspp_compat]

  def forward(self, x):
    return sum(conv(x) for conv in list(self.conv2d_list)[:self.summed])


class Bottleneck(nn.Module):

  def __init__(self, in_channels, planes, stride, dilation, downsample):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, planes, 1, stride=stride, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = downsample

  def forward(self, x):
    out = torch.relu(self.bn1(self.conv1(x)))
    out = torch.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    shortcut = x if self.downsample is None else self.downsample(x)
    return torch.relu(out + shortcut)


class DeepLabResNet(nn.Module):
  """ResNetMulti (multi_level) / ResNet of deeplab.py, with a width option."""

  def __init__(self, blocks, width, num_classes, aspp_compat, multi_level):
    super().__init__()
    self.multi_level = multi_level
    self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
    self.in_channels = width
    self.layer1 = self._stage(width, blocks[0], 1, 1)
    self.layer2 = self._stage(width * 2, blocks[1], 2, 1)
    self.layer3 = self._stage(width * 4, blocks[2], 1, 2)
    self.layer4 = self._stage(width * 8, blocks[3], 1, 4)
    if multi_level:
      self.layer5 = Classifier(width * 16, num_classes, aspp_compat)
      self.layer6 = Classifier(width * 32, num_classes, aspp_compat)
    else:
      self.layer5 = Classifier(width * 32, num_classes, aspp_compat)

  def _stage(self, planes, count, stride, dilation):
    downsample = None
    if stride != 1 or self.in_channels != planes * 4 or dilation in (2, 4):
      downsample = nn.Sequential(nn.Conv2d(self.in_channels, planes * 4, 1, stride=stride,
                                           bias=False), nn.BatchNorm2d(planes * 4))
    layers = [Bottleneck(self.in_channels, planes, stride, dilation, downsample)]
    self.in_channels = planes * 4
    layers += [Bottleneck(self.in_channels, planes, 1, dilation, None) for _ in range(1, count)]
    return nn.Sequential(*layers)

  def forward(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    layer3 = self.layer3(self.layer2(self.layer1(x)))
    layer4 = self.layer4(layer3)
    out = {"features": layer4, "aux_features": layer3}
    if self.multi_level:
      out.update(aux_logits=self.layer5(layer3), logits=self.layer6(layer4))
    else:
      out["logits"] = self.layer5(layer4)
    return out


class DeepLabVGG(nn.Module):
  """DeeplabVGG: torchvision VGG-16 features minus pool4/pool5, conv5 dilated, fc6/fc7 added."""

  def __init__(self, width, num_classes, aspp_compat):
    super().__init__()
    config = [1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M"]
    layers, in_channels = [], 3
    for item in config:  # torchvision's vgg16().features, widths scaled.
      if item == "M":
        layers.append(nn.MaxPool2d(2, 2))
      else:
        layers += [nn.Conv2d(in_channels, width * item, 3, padding=1), nn.ReLU()]
        in_channels = width * item
    layers = layers[:23] + layers[24:30]  # Drop pool4 (23) and pool5 (30).
    for index in (23, 25, 27):
      layers[index].dilation, layers[index].padding = (2, 2), (2, 2)
    fc6 = nn.Conv2d(width * 8, width * 16, 3, padding=4, dilation=4)
    fc7 = nn.Conv2d(width * 16, width * 16, 3, padding=4, dilation=4)
    self.features = nn.Sequential(*layers, fc6, nn.ReLU(), fc7, nn.ReLU())
    self.classifier = Classifier(width * 16, num_classes, aspp_compat)

  def forward(self, x):
    features = self.features(x)
    return {"features": features, "logits": self.classifier(features)}


class FCDiscriminator(nn.Module):

  def __init__(self, num_channels, ndf):
    super().__init__()
    self.conv1 = nn.Conv2d(num_channels, ndf, 4, stride=2, padding=1)
    self.conv2 = nn.Conv2d(ndf, ndf * 2, 4, stride=2, padding=1)
    self.conv3 = nn.Conv2d(ndf * 2, ndf * 4, 4, stride=2, padding=1)
    self.conv4 = nn.Conv2d(ndf * 4, ndf * 8, 4, stride=2, padding=1)
    self.classifier = nn.Conv2d(ndf * 8, 1, 4, stride=2, padding=1)

  def forward(self, x):
    for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
      x = nn.functional.leaky_relu(conv(x), 0.2)
    return {"logits": self.classifier(x)}


def _generator(architecture, options):
  if architecture == "deeplab_v2_vgg16":
    return DeepLabVGG(options["base_width"], options["num_classes"], options["aspp_compat"])
  return DeepLabResNet(options["blocks"], options["base_width"], options["num_classes"],
                       options["aspp_compat"], architecture.endswith("multi"))


def _model(architecture, options):
  if architecture == "output_space_discriminator":
    return FCDiscriminator(options["num_channels"], options["base_filters"])
  return _generator(architecture, options)


def _fill(model, seed):
  """Loads deterministic weights and random BatchNorm statistics; returns the state dict."""
  state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
  weights = deterministic_state_dict({k: tuple(v.shape) for k, v in state.items()}, seed)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
  return model.eval()


def _run(model, image_nhwc):
  with torch.no_grad():
    out = model(torch.from_numpy(image_nhwc).permute(0, 3, 1, 2).contiguous())
  return {k: v.permute(0, 2, 3, 1).numpy() for k, v in out.items()}


# name -> (architecture, model options, input NHWC shape, seed, how the weights are kept).
FIXTURES = {
    "resnet_multi_tiny": ("deeplab_v2_resnet101_multi",
                          {"num_classes": 5, "blocks": [1, 1, 2, 1], "base_width": 4,
                           "aspp_compat": "adaptsegnet"}, (1, 37, 45, 3), 1, "zip+legacy"),
    "resnet_single_tiny": ("deeplab_v2_resnet101_single",
                           {"num_classes": 4, "blocks": [1, 1, 1, 1], "base_width": 4,
                            "aspp_compat": "full"}, (2, 33, 30, 3), 2, "zip"),
    "vgg_tiny": ("deeplab_v2_vgg16", {"num_classes": 5, "base_width": 2,
                                      "aspp_compat": "adaptsegnet"}, (1, 45, 51, 3), 3, "zip"),
    "discriminator_tiny": ("output_space_discriminator", {"num_channels": 5, "base_filters": 4},
                           (1, 32, 64, 5), 4, "wrapped"),
    "resnet_multi_full": ("deeplab_v2_resnet101_multi",
                          {"num_classes": 19, "blocks": [3, 4, 23, 3], "base_width": 64,
                           "aspp_compat": "adaptsegnet"}, (1, 65, 65, 3), 10, "seed"),
    "vgg_full": ("deeplab_v2_vgg16", {"num_classes": 19, "base_width": 64,
                                      "aspp_compat": "adaptsegnet"}, (1, 64, 48, 3), 11, "seed"),
    "discriminator_full": ("output_space_discriminator", {"num_channels": 19, "base_filters": 64},
                           (1, 96, 96, 19), 12, "seed"),
}
# Full-size outputs kept small: the logits only.
FULL_OUTPUTS = ("logits", "aux_logits")


def _save_checkpoints(name, model, storage, output_dir):
  state = model.state_dict()
  files = []
  if storage in ("zip", "zip+legacy"):
    files.append(f"{name}.pth")
    torch.save(state, os.path.join(output_dir, files[-1]))
  if storage == "zip+legacy":
    files.append(f"{name}_legacy.pth")
    torch.save(state, os.path.join(output_dir, files[-1]), _use_new_zipfile_serialization=False)
  if storage == "wrapped":  # A training script's checkpoint: DataParallel names, extra entries.
    files.append(f"{name}.pth")
    wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "iteration": 7}
    torch.save(wrapped, os.path.join(output_dir, files[-1]))
  return files


def _tensor_fixture(output_dir):
  """Non-contiguous views, storage offsets and several dtypes, to test the reader."""
  base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 7
  tensors = {
      "transposed": base.t(),
      "offset": base.reshape(-1)[5:17].reshape(3, 4),
      "strided": base[::2, 1::3],
      "float64": base.double()[1],
      "float16": base.half()[2],
      "bfloat16": base.bfloat16()[3],
      "int64": torch.arange(-3, 4),
      "int32": torch.arange(5, dtype=torch.int32) * 1000,
      "uint8": torch.arange(250, 256, dtype=torch.uint8),
      "bool": torch.tensor([True, False, True]),
      "parameter": nn.Parameter(base[1:3, :2].clone()),
  }
  torch.save(tensors, os.path.join(output_dir, "tensors.pth"))
  torch.save(tensors, os.path.join(output_dir, "tensors_legacy.pth"),
             _use_new_zipfile_serialization=False)
  expected = {k: (v.detach().float() if v.dtype == torch.bfloat16 else v.detach()).numpy()
              for k, v in tensors.items()}
  np.savez_compressed(os.path.join(output_dir, "tensors.npz"), **expected)


def _model_fixtures(output_dir):
  """Writes the `FIXTURES`; returns their manifest entries."""
  entries = {}
  for name, (architecture, options, shape, seed, storage) in FIXTURES.items():
    model = _fill(_model(architecture, options), seed)
    input_kind = "probabilities" if architecture.endswith("discriminator") else "image"
    image = deterministic_input(shape, 100 + seed, input_kind)
    outputs = _run(model, image)
    if storage == "seed":  # The test regenerates weights and input from the seeds.
      outputs = {k: v for k, v in outputs.items() if k in FULL_OUTPUTS}
    else:
      outputs["input"] = image
    np.savez_compressed(os.path.join(output_dir, f"{name}.npz"), **outputs)
    entries[name] = {
        "architecture": architecture, "options": options, "seed": seed,
        "input": {"shape": list(shape), "seed": 100 + seed, "kind": input_kind},
        "checkpoints": [] if storage == "seed" else _save_checkpoints(name, model, storage,
                                                                     output_dir),
        "outputs": f"{name}.npz", "output_keys": sorted(set(outputs) - {"input"}),
    }
    print(name, {k: v.shape for k, v in outputs.items()})
  return entries


# name -> (the `FIXTURES` entry whose weights it starts from, input NHWC shape, input seed).
TRAIN_MODE_FIXTURES = {"resnet_multi_tiny_train": ("resnet_multi_tiny", (2, 41, 33, 3), 120)}
RUNNING_STATISTICS = (".running_mean", ".running_var")


def _train_mode_fixtures(output_dir):
  """One forward in train mode: batch statistics normalise, running statistics are updated (the
  reference's BatchNorm affine parameters have requires_grad=False, which does not change the
  forward). Saves the outputs and the running statistics after it; returns the manifest entries."""
  entries = {}
  for name, (base, shape, input_seed) in TRAIN_MODE_FIXTURES.items():
    architecture, options, _, seed, _ = FIXTURES[base]
    model = _fill(_model(architecture, options), seed).train()
    image = deterministic_input(shape, input_seed, "image")
    outputs = _run(model, image)
    statistics = {f"state/{k}": v.numpy() for k, v in model.state_dict().items()
                  if k.endswith(RUNNING_STATISTICS)}
    np.savez_compressed(os.path.join(output_dir, f"{name}.npz"), **outputs, **statistics)
    entries[name] = {
        "architecture": architecture, "options": options, "weights": f"{base}.pth",
        "input": {"shape": list(shape), "seed": input_seed, "kind": "image"},
        "outputs": f"{name}.npz", "output_keys": sorted(outputs),
    }
    print(name, {k: v.shape for k, v in outputs.items()}, len(statistics), "statistics")
  return entries


# The DeepLab-v2 init files: one classifier `layer5` on layer4 with the 21 classes of PASCAL VOC
# (the COCO init's prototxt), every key prefixed "Scale.", PyTorch-0.3-era legacy format without
# `num_batches_tracked`. name -> (model options, input NHWC shape, seed).
DEEPLAB_INIT_CLASSES = 21
DEEPLAB_INIT_FIXTURES = {
    "deeplab_init_tiny": ({"blocks": [1, 1, 1, 1], "base_width": 2}, (1, 41, 33, 3), 30),
}
BACKBONE_OUTPUTS = ("features", "aux_features")


def _deeplab_init_fixtures(output_dir):
  """Writes the `DEEPLAB_INIT_FIXTURES`; returns their manifest entries."""
  entries = {}
  for name, (options, shape, seed) in DEEPLAB_INIT_FIXTURES.items():
    model = _fill(DeepLabResNet(options["blocks"], options["base_width"], DEEPLAB_INIT_CLASSES,
                                "full", multi_level=False), seed)
    state = {f"Scale.{k}": v for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    torch.save(state, os.path.join(output_dir, f"{name}.pth"),
               _use_new_zipfile_serialization=False)
    image = deterministic_input(shape, 100 + seed, "image")
    outputs = {k: v for k, v in _run(model, image).items() if k in BACKBONE_OUTPUTS}
    np.savez_compressed(os.path.join(output_dir, f"{name}.npz"), **outputs)
    entries[name] = {
        "options": options, "head_classes": DEEPLAB_INIT_CLASSES, "checkpoint": f"{name}.pth",
        "input": {"shape": list(shape), "seed": 100 + seed, "kind": "image"},
        "outputs": f"{name}.npz", "output_keys": sorted(outputs),
    }
    print(name, {k: v.shape for k, v in outputs.items()})
  return entries


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--output_dir", default="tests/fixtures/torch_parity")
  args = parser.parse_args()
  os.makedirs(args.output_dir, exist_ok=True)
  torch.manual_seed(0)
  manifest = {"torch_version": torch.__version__,
              "fixtures": _model_fixtures(args.output_dir),
              "train_mode": _train_mode_fixtures(args.output_dir),
              "deeplab_init": _deeplab_init_fixtures(args.output_dir)}
  _tensor_fixture(args.output_dir)
  with open(os.path.join(args.output_dir, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2, sort_keys=True)
    f.write("\n")


if __name__ == "__main__":
  main()
