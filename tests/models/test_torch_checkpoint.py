"""The torch-free `.pth` reader: formats, tensor geometry, dtypes, refusing unsafe pickles, and
errors that name the file."""

import contextlib
import io
import os
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest

from tfdaseg.models import torch_checkpoint
from tfdaseg.models.torch_checkpoint import (CheckpointError, UnsafeCheckpointError,
                                             load_state_dict, load_torch_checkpoint)

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures", "torch_parity")


def fixture(name: str) -> str:
  return os.path.join(FIXTURES, name)


@pytest.mark.parametrize("name", ["tensors.pth", "tensors_legacy.pth"])
def test_reads_views_offsets_and_dtypes(name):
  loaded = load_torch_checkpoint(fixture(name))
  expected = np.load(fixture("tensors.npz"))
  assert sorted(loaded) == sorted(expected.files)
  for key in expected.files:
    assert loaded[key].dtype == expected[key].dtype, key
    np.testing.assert_array_equal(loaded[key], expected[key], err_msg=key)
  assert loaded["transposed"].shape == (6, 4)


def test_zip_and_legacy_formats_agree():
  new = load_state_dict(fixture("resnet_multi_tiny.pth"))
  legacy = load_state_dict(fixture("resnet_multi_tiny_legacy.pth"))
  assert list(new) == list(legacy)
  for key in new:
    np.testing.assert_array_equal(new[key], legacy[key])
  assert new["conv1.weight"].shape == (4, 3, 7, 7)
  assert new["bn1.num_batches_tracked"].dtype == np.int64


def test_unwraps_training_checkpoints():
  state = load_state_dict(fixture("discriminator_tiny.pth"))
  assert "iteration" not in state
  assert all(key.startswith("module.") for key in state)


class _Exploit:
  """Pickles as a call to os.system, which would create `marker` if it ran."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


def _write_zip(path, payload: bytes) -> None:
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/data.pkl", payload)


def _write_legacy(path, payload: bytes) -> None:
  with open(path, "wb") as f:
    for header in (torch_checkpoint.LEGACY_MAGIC_NUMBER, torch_checkpoint.LEGACY_PROTOCOL_VERSION,
                   {"little_endian": True}):
      pickle.dump(header, f, protocol=2)
    f.write(payload)
    pickle.dump([], f, protocol=2)


@pytest.mark.parametrize("writer", [_write_zip, _write_legacy])
def test_refuses_a_malicious_pickle(tmp_path, writer):
  marker = tmp_path / "pwned"
  path = tmp_path / "evil.pth"
  writer(path, pickle.dumps({"weight": _Exploit(marker)}, protocol=2))
  with pytest.raises(UnsafeCheckpointError,
                     match=r"evil\.pth: refusing to load global \w+\.system"):
    load_torch_checkpoint(str(path))
  assert not marker.exists()


@contextlib.contextmanager
def _fake_torch_pickling(monkeypatch):
  """Lets plain `pickle` write torch-style records: stand-ins registered as torch globals."""
  torch_module = types.ModuleType("torch")
  utils = types.ModuleType("torch._utils")

  def _rebuild_tensor_v2(*args):
    raise AssertionError("only pickled, never called")

  class FloatStorage:
    pass

  _rebuild_tensor_v2.__module__ = "torch._utils"
  _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
  FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
  utils._rebuild_tensor_v2, torch_module.FloatStorage, torch_module._utils = (
      _rebuild_tensor_v2, FloatStorage, utils)
  with monkeypatch.context() as patch:
    patch.setitem(sys.modules, "torch", torch_module)
    patch.setitem(sys.modules, "torch._utils", utils)
    yield _rebuild_tensor_v2, FloatStorage


class _Tensor:

  def __init__(self, rebuild, storage, offset, size, stride):
    self.args = (rebuild, storage, offset, size, stride)

  def __reduce__(self):
    rebuild, storage, offset, size, stride = self.args
    return rebuild, (storage, offset, size, stride, False, None)


class _Storage:

  def __init__(self, storage_type, numel):
    self.storage_type, self.numel = storage_type, numel


def _tensor_zip(path, monkeypatch, offset, size, stride, numel=6, stored_bytes=24):
  with _fake_torch_pickling(monkeypatch) as (rebuild, float_storage):
    storage = _Storage(float_storage, numel)

    class Pickler(pickle.Pickler):

      def persistent_id(self, obj):
        if isinstance(obj, _Storage):
          return ("storage", obj.storage_type, "0", "cpu", obj.numel)
        return None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"w": _Tensor(rebuild, storage, offset, size, stride)})
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/data.pkl", buffer.getvalue())
    archive.writestr("archive/data/0", np.arange(stored_bytes // 4, dtype="<f4").tobytes())


def test_reads_a_handwritten_tensor_record(tmp_path, monkeypatch):
  path = tmp_path / "ok.pth"
  _tensor_zip(path, monkeypatch, offset=1, size=(2, 2), stride=(1, 2))
  np.testing.assert_array_equal(load_state_dict(str(path))["w"], [[1, 3], [2, 4]])


def test_rejects_a_tensor_outside_its_storage(tmp_path, monkeypatch):
  path = tmp_path / "oob.pth"
  _tensor_zip(path, monkeypatch, offset=2, size=(2, 3), stride=(3, 1))
  with pytest.raises(ValueError, match=r"oob\.pth: tensor .* exceeds its storage of 6 elements"):
    load_torch_checkpoint(str(path))


def test_rejects_a_truncated_storage(tmp_path, monkeypatch):
  path = tmp_path / "short.pth"
  _tensor_zip(path, monkeypatch, offset=0, size=(6,), stride=(1,), stored_bytes=16)
  with pytest.raises(ValueError, match=r"short\.pth: storage 0 holds 16 bytes, 24 expected"):
    load_torch_checkpoint(str(path))


def test_rejects_files_that_are_not_checkpoints(tmp_path):
  path = tmp_path / "notes.pth"
  path.write_text("not a checkpoint")
  with pytest.raises(ValueError, match=r"notes\.pth: neither a zip nor a legacy"):
    load_torch_checkpoint(str(path))
  plain = tmp_path / "plain.pth"
  plain.write_bytes(pickle.dumps({"a": 1}, protocol=2))
  with pytest.raises(ValueError, match="bad magic number"):
    load_torch_checkpoint(str(plain))


@pytest.mark.parametrize("name", ["resnet_single_tiny.pth", "resnet_multi_tiny_legacy.pth"])
@pytest.mark.parametrize("fraction", [0.001, 0.01, 0.3, 0.9])
def test_truncated_files_fail_naming_the_file(tmp_path, name, fraction):
  with open(fixture(name), "rb") as f:
    data = f.read()
  path = tmp_path / "cut.pth"
  path.write_bytes(data[:max(1, int(len(data) * fraction))])
  with pytest.raises(CheckpointError) as error:
    load_state_dict(str(path))
  assert error.value.path == str(path)
  assert str(error.value) == f"{path}: {error.value.problem}"


def test_missing_file_fails_naming_the_file(tmp_path):
  path = tmp_path / "absent.pth"
  with pytest.raises(CheckpointError, match=r"absent\.pth: No such file or directory"):
    load_state_dict(str(path))
