"""Seconds per step of the PyTorch AdaptSegNet reference step, for `bench/train_step.py`'s ratios.

Runs where torch is installed (a separate venv: `pip install torch==2.13.0 numpy`); tfdaseg is not
imported. The step is the one of the reference's `train_gta2cityscapes_multi.py` (one iteration,
iter_size 1), line for line: segmentation loss on source (main + 0.1 * aux, after bilinear
upsampling with align_corners=True) and backward; adversarial loss of the target predictions
against the source label through both discriminators (D parameters frozen) and backward; each
discriminator on the detached source and target softmaxes (each loss / 2) and backward; then the
SGD (momentum 0.9, weight decay 5e-4, heads at 10x) and both Adam (betas 0.9, 0.99) steps. The
model is the independent re-implementation in `tools/make_torch_parity_fixtures.py` (ResNet-101
multi-level, 19 classes), in train mode with the BatchNorm affine parameters frozen, as the
reference does.

Prints progress on stderr, then one JSON object:
  {"bench": "torch_reference_step", "size": "320x160", "threads": 2, "s_per_step_median": ...}
With --serve it stays warm for `bench/train_step.py`: after the warm-up it prints one JSON line
{"ready": ...}, then for every line N read from stdin runs N steps and prints {"times": [...]}.

Usage: python bench/torch_reference_step.py [--steps=5] [--warmup=2] [--size=320x160] [--threads=2]
                                            [--serve]
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools.make_torch_parity_fixtures import DeepLabResNet, FCDiscriminator  # pylint: disable=g-import-not-at-top
from worker_protocol import serve  # pylint: disable=g-import-not-at-top  (bench/, the script's folder)

NUM_CLASSES = 19


def _reference_models():
  generator = DeepLabResNet([3, 4, 23, 3], 64, NUM_CLASSES, "adaptsegnet", multi_level=True)
  for module in generator.modules():
    if isinstance(module, nn.BatchNorm2d):
      for parameter in module.parameters():
        parameter.requires_grad = False
  discriminators = [FCDiscriminator(NUM_CLASSES, 64) for _ in range(2)]
  return generator.train(), [d.train() for d in discriminators]


def _optimizers(generator, discriminators, learning_rate=2.5e-4, learning_rate_d=1e-4):
  # ResNetMulti.optim_parameters: backbone at lr, layer5/layer6 at 10x lr.
  heads = [p for name, p in generator.named_parameters()
           if name.startswith(("layer5", "layer6")) and p.requires_grad]
  backbone = [p for name, p in generator.named_parameters()
              if not name.startswith(("layer5", "layer6")) and p.requires_grad]
  sgd = torch.optim.SGD([{"params": backbone, "lr": learning_rate},
                         {"params": heads, "lr": 10 * learning_rate}],
                        lr=learning_rate, momentum=0.9, weight_decay=5e-4)
  adams = [torch.optim.Adam(d.parameters(), lr=learning_rate_d, betas=(0.9, 0.99))
           for d in discriminators]
  return sgd, adams


def make_step(width, height):
  """Returns a closure running one reference training iteration on fixed random batches."""
  torch.manual_seed(0)
  generator, (d1, d2) = _reference_models()
  sgd, (adam1, adam2) = _optimizers(generator, (d1, d2))
  images = torch.randn(1, 3, height, width) * 50
  labels = torch.randint(0, NUM_CLASSES, (1, height, width))
  images_target = torch.randn(1, 3, height, width) * 50
  seg_loss = nn.CrossEntropyLoss(ignore_index=255)
  bce_loss = nn.BCEWithLogitsLoss()
  interp = nn.Upsample(size=(height, width), mode="bilinear", align_corners=True)
  source_label, target_label = 0.0, 1.0
  lambda_seg, lambda_adv1, lambda_adv2 = 0.1, 0.0002, 0.001

  def set_grad(modules, flag):
    for module in modules:
      for parameter in module.parameters():
        parameter.requires_grad = flag

  def step():
    sgd.zero_grad()
    adam1.zero_grad()
    adam2.zero_grad()
    set_grad((d1, d2), False)
    out = generator(images)
    pred1, pred2 = interp(out["aux_logits"]), interp(out["logits"])
    loss = seg_loss(pred2, labels) + lambda_seg * seg_loss(pred1, labels)
    loss.backward()
    out = generator(images_target)
    pred_target1, pred_target2 = interp(out["aux_logits"]), interp(out["logits"])
    d_out1 = d1(torch.softmax(pred_target1, 1))["logits"]
    d_out2 = d2(torch.softmax(pred_target2, 1))["logits"]
    loss = (lambda_adv1 * bce_loss(d_out1, torch.full_like(d_out1, source_label)) +
            lambda_adv2 * bce_loss(d_out2, torch.full_like(d_out2, source_label)))
    loss.backward()
    set_grad((d1, d2), True)
    for preds, label in (((pred1, pred2), source_label),
                         ((pred_target1, pred_target2), target_label)):
      for discriminator, pred in zip((d1, d2), preds):
        d_out = discriminator(torch.softmax(pred.detach(), 1))["logits"]
        (bce_loss(d_out, torch.full_like(d_out, label)) / 2).backward()
    sgd.step()
    adam1.step()
    adam2.step()

  return step


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--size", default="320x160", help="WxH of source and target images.")
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--serve", action="store_true", help="Stay warm; time N steps per stdin line.")
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  width, height = (int(v) for v in args.size.lower().split("x"))
  step = make_step(width, height)
  for _ in range(args.warmup):
    step()
  if args.serve:
    serve(step, {"torch": torch.__version__, "threads": torch.get_num_threads(),
                 "interop_threads": torch.get_num_interop_threads(),
                 "mkldnn": torch.backends.mkldnn.is_available()})
    return
  times = []
  for index in range(args.steps):
    started = time.time()
    step()
    times.append(time.time() - started)
    print(f"torch reference step {index + 1}/{args.steps}: {times[-1]:.3f} s", file=sys.stderr,
          flush=True)
  print(json.dumps({"bench": "torch_reference_step", "size": f"{width}x{height}",
                    "threads": args.threads, "torch": torch.__version__,
                    "s_per_step_median": round(statistics.median(times), 4)}), flush=True)


if __name__ == "__main__":
  main()
