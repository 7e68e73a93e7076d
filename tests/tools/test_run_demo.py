"""`make demo` at toy size: the same stages and public commands, in about a minute."""

import json
import os
import subprocess
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_demo(tmp_path, *extra):
  return subprocess.run(
      [sys.executable, os.path.join(_REPO, "tools", "run_demo.py"), "--scale=tiny",
       f"--out={tmp_path / 'out'}", f"--data={tmp_path / 'data'}", *extra],
      cwd=_REPO, capture_output=True, text=True, timeout=600, check=False)


def test_tiny_demo_runs_end_to_end_and_reuses_its_stages(tmp_path):
  first = _run_demo(tmp_path)
  assert first.returncode == 0, first.stderr[-3000:]
  out = tmp_path / "out"
  report = json.loads((out / "report.json").read_text())
  for run in ("source_only", "adapted"):
    assert 0.0 <= report[run]["target_miou"] <= 1.0
    assert report[run]["per_class_iou"]
  assert abs(report["gain_miou"] - (report["adapted"]["target_miou"]
                                    - report["source_only"]["target_miou"])) < 1e-9
  for artefact in ("report.md", "per_class_iou.png", "predictions_grid.png",
                   "training_curves.png", "saved_model/saved_model.pb"):
    assert (out / artefact).is_file(), artefact
  assert list((out / "predictions").rglob("*.png"))

  checkpoints = sorted(p.name for p in (out / "runs" / "adapted").glob("ckpt-*.index"))
  second = _run_demo(tmp_path)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "reusing" in second.stderr
  # The finished runs are not trained again: no new checkpoints appear.
  assert sorted(p.name for p in (out / "runs" / "adapted").glob("ckpt-*.index")) == checkpoints
  assert json.loads((out / "report.json").read_text())["adapted"] == report["adapted"]
