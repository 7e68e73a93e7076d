"""Writes the PyTorch parity fixture of HRDA around a tiny DAFormer (run where torch is installed;
tfdaseg is not needed and not imported).

HRDAHead.forward / decode_hr / get_scale_attention and HRDAEncoderDecoder.extract_slide_feat /
get_crop_bbox's crop are copied from lhoyer/HRDA (mmseg/models/decode_heads/hrda_head.py,
mmseg/models/segmentors/hrda_encoder_decoder.py), debug outputs left out; the MiT and the
DAFormer head are tools/make_daformer_parity_fixtures.py's (DAFormer's code). The scale attention
is HRDAHead's `attn_cfg`: DAFormerHead with the ASPP fusion replaced by a 1x1 ConvModule.

Fixture `hrda_tiny` (tests/models/test_hrda.py reads it): the state dict in HRDAEncoderDecoder's
key layout (`backbone.*`, `decode_head.head.*`, `decode_head.scale_attention.*`), a 64x96
Caffe-preprocessed input and, in eval mode (BatchNorm running statistics, no dropout):
  * `fused_slide`: `decode_head.forward` on the context view (scale 0.5) and the overlapping
    sliding 32x32 detail windows, as `encode_decode` before its final resize;
  * `fused_crop`, `detail_crop`: the training path with the detail crop `CROP_BOX` (fused and the
    crop's own logits, as `forward_train` feeds `losses`).

Usage:
  /work/torchvenv/bin/python -m tools.make_hrda_parity_fixtures --output_dir=tests/fixtures/torch_parity
"""

import argparse
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tools.make_daformer_parity_fixtures import (MLP, TINY_MIT, ConvModule, DAFormerHead,
                                                 MixVisionTransformer, _fill, _nhwc, normalise)
from tools.torch_parity_weights import deterministic_input

SHAPE = (1, 64, 96, 3)
CROP_SIZE = (32, 32)
# Offsets divisible by 8 (crop_coord_divisible), as get_crop_bbox draws them.
CROP_BOX = (16, 48, 40, 72)
NUM_CLASSES = 5
EMBED_DIM = 8
SEED = 50


def scale_box(box, scale):
  y1, y2, x1, x2 = box
  return int(y1 / scale), int(y2 / scale), int(x1 / scale), int(x2 / scale)


def crop(img, crop_bbox):
  crop_y1, crop_y2, crop_x1, crop_x2 = crop_bbox
  return img[:, :, crop_y1:crop_y2, crop_x1:crop_x2]


class ScaleAttentionHead(nn.Module):
  """DAFormerHead with fusion_cfg=dict(type='conv', kernel_size=1, ...) (HRDAHead attn_cfg)."""

  def __init__(self, in_channels, embed_dim, num_classes):
    super().__init__()
    self.embed_layers = nn.ModuleDict(
        {str(i): MLP(c, embed_dim) for i, c in enumerate(in_channels)})
    self.fuse_layer = ConvModule(embed_dim * len(in_channels), embed_dim, 1)
    self.dropout = nn.Dropout2d(0.1)
    self.conv_seg = nn.Conv2d(embed_dim, num_classes, kernel_size=1)

  forward = DAFormerHead.forward


class HRDAHead(nn.Module):

  def __init__(self, in_channels, embed_dim, num_classes):
    super().__init__()
    self.head = DAFormerHead(in_channels, embed_dim, embed_dim, num_classes)
    self.scale_attention = ScaleAttentionHead(in_channels, embed_dim, num_classes)
    self.num_classes = num_classes
    self.os = 4
    self.scales = [0.5, 1]
    self.align_corners = False
    self.hr_crop_box = None

  def set_hr_crop_box(self, boxes):
    self.hr_crop_box = boxes

  def hr_crop_slice(self, scale):
    crop_y1, crop_y2, crop_x1, crop_x2 = scale_box(self.hr_crop_box, scale)
    return slice(crop_y1, crop_y2), slice(crop_x1, crop_x2)

  def resize(self, input, scale_factor):
    return F.interpolate(input, scale_factor=scale_factor, mode='bilinear',
                         align_corners=self.align_corners)

  def decode_hr(self, inp, bs):
    if isinstance(inp, dict) and 'boxes' in inp.keys():
      features = inp['features']  # level, crop * bs, c, h, w
      boxes = inp['boxes']
      dev = features[0][0].device
      h_img, w_img = 0, 0
      for i in range(len(boxes)):
        boxes[i] = scale_box(boxes[i], self.os)
        y1, y2, x1, x2 = boxes[i]
        if h_img < y2:
          h_img = y2
        if w_img < x2:
          w_img = x2
      preds = torch.zeros((bs, self.num_classes, h_img, w_img), device=dev)
      count_mat = torch.zeros((bs, 1, h_img, w_img), device=dev)

      crop_seg_logits = self.head(features)
      for i in range(len(boxes)):
        y1, y2, x1, x2 = boxes[i]
        crop_seg_logit = crop_seg_logits[i * bs:(i + 1) * bs]
        preds += F.pad(crop_seg_logit,
                       (int(x1), int(preds.shape[3] - x2), int(y1), int(preds.shape[2] - y2)))
        count_mat[:, :, y1:y2, x1:x2] += 1

      assert (count_mat == 0).sum() == 0
      preds = preds / count_mat
      return preds
    else:
      return self.head(inp)

  def get_scale_attention(self, inp):
    return torch.sigmoid(self.scale_attention(inp))

  def forward(self, inputs):
    assert len(inputs) == 2
    hr_inp = inputs[1]
    hr_scale = self.scales[1]
    lr_inp = inputs[0]
    lr_sc_att_inp = inputs[0]
    lr_scale = self.scales[0]
    batch_size = lr_inp[0].shape[0]
    assert lr_scale <= hr_scale

    has_crop = self.hr_crop_box is not None
    lr_seg = self.head(lr_inp)
    hr_seg = self.decode_hr(hr_inp, batch_size)
    att = self.get_scale_attention(lr_sc_att_inp)
    if has_crop:
      mask = lr_seg.new_zeros([lr_seg.shape[0], 1, *lr_seg.shape[2:]])
      sc_os = self.os / lr_scale
      slc = self.hr_crop_slice(sc_os)
      mask[:, :, slc[0], slc[1]] = 1
      att = att * mask
    lr_seg = (1 - att) * lr_seg
    up_lr_seg = self.resize(lr_seg, hr_scale / lr_scale)
    if torch.is_tensor(att):
      att = self.resize(att, hr_scale / lr_scale)
    if has_crop:
      hr_seg_inserted = torch.zeros_like(up_lr_seg)
      slc = self.hr_crop_slice(self.os)
      hr_seg_inserted[:, :, slc[0], slc[1]] = hr_seg
    else:
      hr_seg_inserted = hr_seg
    fused_seg = att * hr_seg_inserted + up_lr_seg
    return fused_seg, lr_seg, hr_seg


class HRDAEncoderDecoder(nn.Module):

  def __init__(self, mit, embed_dim, num_classes, crop_size):
    super().__init__()
    self.backbone = MixVisionTransformer(**mit)
    self.decode_head = HRDAHead(mit["embed_dims"], embed_dim, num_classes)
    self.scales = [0.5, 1]
    self.crop_size = crop_size
    self.hr_slide_overlapping = True
    self.align_corners = False

  def extract_unscaled_feat(self, img):
    return self.backbone(img)

  def extract_slide_feat(self, img):
    if self.hr_slide_overlapping:
      h_stride, w_stride = [e // 2 for e in self.crop_size]
    else:
      h_stride, w_stride = self.crop_size
    h_crop, w_crop = self.crop_size
    bs, _, h_img, w_img = img.size()
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1

    crop_imgs, crop_feats, crop_boxes = [], [], []
    for h_idx in range(h_grids):
      for w_idx in range(w_grids):
        y1 = h_idx * h_stride
        x1 = w_idx * w_stride
        y2 = min(y1 + h_crop, h_img)
        x2 = min(x1 + w_crop, w_img)
        y1 = max(y2 - h_crop, 0)
        x1 = max(x2 - w_crop, 0)
        crop_imgs.append(img[:, :, y1:y2, x1:x2])
        crop_boxes.append([y1, y2, x1, x2])
    crop_imgs = torch.cat(crop_imgs, dim=0)
    crop_feats = self.extract_unscaled_feat(crop_imgs)
    return {'features': crop_feats, 'boxes': crop_boxes}

  def resize(self, img, s):
    if s == 1:
      return img
    return F.interpolate(img, scale_factor=s, mode='bilinear', align_corners=self.align_corners)

  def encode_decode_logits(self, img):
    """encode_decode up to its final resize to the image size."""
    mres_feats = []
    for i, s in enumerate(self.scales):
      scaled_img = self.resize(img, s)
      if i >= 1:
        mres_feats.append(self.extract_slide_feat(scaled_img))
      else:
        mres_feats.append(self.extract_unscaled_feat(scaled_img))
    return self.decode_head.forward(mres_feats)[0]

  def forward_train_logits(self, img, crop_box):
    """_forward_train_features with a given crop box, then decode_head.forward."""
    mres_feats = []
    for i, s in enumerate(self.scales):
      scaled_img = self.resize(img, s)
      if i >= 1:
        self.decode_head.set_hr_crop_box(crop_box)
        scaled_img = crop(scaled_img, crop_box)
      mres_feats.append(self.extract_unscaled_feat(scaled_img))
    fused, _, hr_seg = self.decode_head.forward(mres_feats)
    self.decode_head.hr_crop_box = None
    return fused, hr_seg


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--output_dir", default="tests/fixtures/torch_parity")
  args = parser.parse_args()
  torch.manual_seed(0)
  model = _fill(HRDAEncoderDecoder(TINY_MIT, EMBED_DIM, NUM_CLASSES, CROP_SIZE), SEED)
  image = deterministic_input(SHAPE, 100 + SEED, "image")
  with torch.no_grad():
    inputs = normalise(image)
    slide = model.encode_decode_logits(inputs)
    fused, detail = model.forward_train_logits(inputs, CROP_BOX)
  outputs = {"input": image, "fused_slide": _nhwc(slide), "fused_crop": _nhwc(fused),
             "detail_crop": _nhwc(detail)}
  np.savez_compressed(os.path.join(args.output_dir, "hrda_tiny.npz"), **outputs)
  torch.save(model.state_dict(), os.path.join(args.output_dir, "hrda_tiny.pth"))
  manifest = {"torch_version": torch.__version__, "mit": TINY_MIT, "embed_dim": EMBED_DIM,
              "num_classes": NUM_CLASSES, "detail_crop": list(CROP_SIZE),
              "crop_box": list(CROP_BOX), "checkpoint": "hrda_tiny.pth",
              "outputs": "hrda_tiny.npz"}
  with open(os.path.join(args.output_dir, "hrda_manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2, sort_keys=True)
    f.write("\n")
  print({k: v.shape for k, v in outputs.items()})


if __name__ == "__main__":
  main()
