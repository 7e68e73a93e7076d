"""bench/worker_protocol.py: workers measure the checkout the bench was started from."""

import os
import shutil
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "bench")


@pytest.fixture
def worktree_worker(tmp_path, monkeypatch):
  """`Worker` as a bench in another checkout (tmp_path) imports it: a stand-in tfdaseg there."""
  (tmp_path / "bench").mkdir()
  shutil.copy(os.path.join(BENCH, "worker_protocol.py"), tmp_path / "bench")
  (tmp_path / "tfdaseg").mkdir()
  (tmp_path / "tfdaseg" / "__init__.py").write_text("")
  monkeypatch.syspath_prepend(str(tmp_path / "bench"))
  monkeypatch.delitem(sys.modules, "worker_protocol", raising=False)
  import worker_protocol  # pylint: disable=g-import-not-at-top
  yield worker_protocol.Worker
  monkeypatch.delitem(sys.modules, "worker_protocol", raising=False)


def test_worker_imports_the_benchs_own_checkout(tmp_path, worktree_worker, monkeypatch):
  monkeypatch.setenv("PYTHONPATH", "/nonexistent")
  # Run as a bench script is: its folder, not the checkout, leads sys.path.
  probe = tmp_path / "bench" / "probe.py"
  probe.write_text("import json, os, sys, tfdaseg\n"
                   "print(json.dumps({'ready': True, 'path': sys.path,\n"
                   "                  'tfdaseg': os.path.dirname(tfdaseg.__file__)}))\n")
  worker = worktree_worker("probe", [sys.executable, str(probe)])
  worker.close()
  assert worker.info["tfdaseg"] == str(tmp_path / "tfdaseg")
  # A PYTHONPATH the caller set stays on the path, after the checkout.
  assert "/nonexistent" in worker.info["path"]
