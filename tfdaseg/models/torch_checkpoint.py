"""Reads PyTorch checkpoints into numpy arrays, without PyTorch and without trusting them.

Both `torch.save` formats are supported:
  * zip (PyTorch >= 1.6): `<root>/data.pkl` is a pickle whose tensors refer, through persistent
    ids, to raw storages stored as `<root>/data/<key>`;
  * legacy: consecutive pickles (magic number, protocol version, system info, the object, the
    list of storage keys), then each storage as an int64 element count and its raw bytes.
A pickle can run arbitrary code, so unpickling goes through `RestrictedUnpickler`, which
resolves only the few globals a state dict needs (to harmless stand-ins) and refuses any other.
Hugging Face's `.bin` weights are `torch.save` files too. `.safetensors` files (a JSON header
and raw tensors, no code) are read by the `safetensors` package; they are recognised by their
content, whatever their name.
"""

import collections
import dataclasses
import pickle
import struct
import zipfile
from typing import Any, Callable

import numpy as np
import safetensors.numpy

# torch/serialization.py constants of the legacy format.
LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL_VERSION = 1001
# How every zip archive (the format of PyTorch >= 1.6) starts: a local file header.
ZIP_MAGIC = b"PK\x03\x04"
# A safetensors file: an 8-byte little-endian header length, then the JSON header.
SAFETENSORS_HEADER_START = 8

# Storage classes a checkpoint may name -> numpy dtype of their elements. bfloat16 is read as
# raw uint16 and widened to float32 (numpy has no bfloat16).
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("float32"),
    "DoubleStorage": np.dtype("float64"),
    "HalfStorage": np.dtype("float16"),
    "BFloat16Storage": np.dtype("uint16"),
    "LongStorage": np.dtype("int64"),
    "IntStorage": np.dtype("int32"),
    "ByteStorage": np.dtype("uint8"),
    "BoolStorage": np.dtype("bool"),
}
# Wrappers training scripts put around the state dict.
STATE_DICT_WRAPPER_KEYS = ("state_dict", "model")


class CheckpointError(ValueError):
  """A file that is not a readable PyTorch checkpoint (or does not fit the model it is loaded
  into); `str()` is "<file>: <problem>".

  Args:
    path: The checkpoint.
    problem: What is wrong with it.
  """

  def __init__(self, path: str, problem: str):
    super().__init__(f"{path}: {problem}")
    self.path = path
    self.problem = problem


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
  """A checkpoint's pickle names a global that is not on the allow-list."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
  name: str

  @property
  def dtype(self) -> np.dtype:
    return STORAGE_DTYPES[self.name]


@dataclasses.dataclass(frozen=True)
class _StorageRef:
  key: str
  storage_type: _StorageType
  numel: int


@dataclasses.dataclass(frozen=True)
class _TensorRef:
  """A tensor whose storage may not have been read yet (legacy files put storages last)."""
  storage: _StorageRef
  offset: int
  size: tuple
  stride: tuple


def _rebuild_tensor(storage, storage_offset, size, stride, *unused) -> _TensorRef:
  # Covers torch._utils._rebuild_tensor (PyTorch < 0.4) and _rebuild_tensor_v2, whose extra
  # arguments (requires_grad, backward_hooks, metadata) do not matter for weights.
  if not isinstance(storage, _StorageRef):
    raise pickle.UnpicklingError(f"tensor rebuilt from {type(storage).__name__}, not a storage")
  return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
  return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class RestrictedUnpickler(pickle.Unpickler):
  """An unpickler that only builds dicts, tensors and storages.

  Args:
    file: A binary file positioned at a pickle.
    persistent_load: Resolves a persistent id (a tuple) to an object.
    source: Name of the checkpoint, for error messages.
  """

  def __init__(self, file, persistent_load: Callable[[tuple], Any], source: str):
    super().__init__(file)
    self._persistent_load = persistent_load
    self._source = source

  def find_class(self, module: str, name: str):
    try:
      return _ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise UnsafeCheckpointError(
          self._source, f"refusing to load global {module}.{name}; a weights checkpoint only "
          "needs OrderedDict, tensors and storages") from None

  def persistent_load(self, pid):
    return self._persistent_load(pid)


def _storage_ref(pid, source: str) -> _StorageRef:
  if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
          and isinstance(pid[1], _StorageType)):
    raise CheckpointError(source, f"unsupported persistent id {pid!r:.100}")
  if len(pid) > 5 and pid[5] is not None:
    raise CheckpointError(source, "storage views (legacy view_metadata) are not supported")
  return _StorageRef(key=str(pid[2]), storage_type=pid[1], numel=int(pid[4]))


def _storage_array(raw: bytes, ref: _StorageRef, little_endian: bool, source: str) -> np.ndarray:
  dtype = ref.storage_type.dtype.newbyteorder("<" if little_endian else ">")
  if len(raw) < ref.numel * dtype.itemsize:
    raise CheckpointError(source, f"storage {ref.key} holds {len(raw)} bytes, "
                          f"{ref.numel * dtype.itemsize} expected")
  array = np.frombuffer(raw, dtype, count=ref.numel).astype(dtype.newbyteorder("="))
  if ref.storage_type.name == "BFloat16Storage":
    array = (array.astype(np.uint32) << 16).view(np.float32)
  return array


def _tensor(ref: _TensorRef, storages: dict[str, np.ndarray], source: str) -> np.ndarray:
  storage = storages[ref.storage.key]
  if any(s < 0 for s in ref.stride) or len(ref.size) != len(ref.stride) or ref.offset < 0:
    raise CheckpointError(source,
                          f"invalid tensor geometry size={ref.size} stride={ref.stride}")
  if 0 in ref.size:
    return np.zeros(ref.size, storage.dtype)
  # A checkpoint is untrusted: the last element must lie inside its storage before striding.
  last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
  if last >= storage.size:
    raise CheckpointError(source, f"tensor (offset {ref.offset}, size {ref.size}, stride "
                          f"{ref.stride}) exceeds its storage of {storage.size} elements")
  strides = tuple(s * storage.itemsize for s in ref.stride)
  view = np.lib.stride_tricks.as_strided(storage[ref.offset:], ref.size, strides, writeable=False)
  return np.array(view)


def _resolve(obj, storages: dict[str, np.ndarray], source: str):
  """Replaces every `_TensorRef` in nested dicts/lists/tuples by its numpy array."""
  if isinstance(obj, _TensorRef):
    return _tensor(obj, storages, source)
  if isinstance(obj, dict):
    resolved = type(obj)()
    for key, value in obj.items():
      resolved[key] = _resolve(value, storages, source)
    return resolved
  if isinstance(obj, (list, tuple)):
    return type(obj)(_resolve(value, storages, source) for value in obj)
  return obj


def _load_zip(path: str) -> Any:
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
      raise CheckpointError(path,
                            f"expected one data.pkl in the archive, found {len(pickles)}")
    root = pickles[0][:-len("data.pkl")]
    byteorder = root + "byteorder"
    little_endian = (byteorder not in names
                     or archive.read(byteorder).decode().strip() == "little")
    refs: dict[str, _StorageRef] = {}

    def persistent_load(pid):
      ref = _storage_ref(pid, path)
      refs[ref.key] = ref
      return ref

    with archive.open(pickles[0]) as f:
      obj = RestrictedUnpickler(f, persistent_load, path).load()
    storages = {}
    for key, ref in refs.items():
      entry = f"{root}data/{key}"
      if entry not in names:
        raise CheckpointError(path, f"storage {key} missing from the archive")
      storages[key] = _storage_array(archive.read(entry), ref, little_endian, path)
  return _resolve(obj, storages, path)


def _load_legacy(path: str) -> Any:
  refs: dict[str, _StorageRef] = {}

  def persistent_load(pid):
    ref = _storage_ref(pid, path)
    refs.setdefault(ref.key, ref)
    return ref

  def refuse_persistent(pid):
    raise CheckpointError(path, "unexpected persistent id in the header")

  with open(path, "rb") as f:
    try:
      magic = RestrictedUnpickler(f, refuse_persistent, path).load()
    except UnsafeCheckpointError:
      raise
    except Exception as e:  # Not a pickle at all: say what the file is not.
      raise CheckpointError(path,
                            f"neither a zip nor a legacy PyTorch checkpoint ({e})") from None
    if magic != LEGACY_MAGIC_NUMBER:
      raise CheckpointError(path, "not a PyTorch checkpoint (bad magic number)")
    protocol = RestrictedUnpickler(f, refuse_persistent, path).load()
    if protocol != LEGACY_PROTOCOL_VERSION:
      raise CheckpointError(path, f"unsupported legacy protocol version {protocol}")
    sys_info = RestrictedUnpickler(f, refuse_persistent, path).load()
    little_endian = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    obj = RestrictedUnpickler(f, persistent_load, path).load()
    keys = RestrictedUnpickler(f, refuse_persistent, path).load()
    storages = {}
    for key in keys:
      if key not in refs:
        raise CheckpointError(path, f"storage {key} listed but never referenced")
      ref = refs[key]
      header = f.read(8)
      if len(header) != 8:
        raise CheckpointError(path, f"truncated before storage {key}")
      count, = struct.unpack("<q" if little_endian else ">q", header)
      if count != ref.numel:
        raise CheckpointError(path,
                              f"storage {key} has {count} elements, {ref.numel} expected")
      size = count * ref.storage_type.dtype.itemsize
      raw = f.read(size)
      if len(raw) != size:
        raise CheckpointError(path, f"truncated in storage {key} ({len(raw)} of {size} bytes)")
      storages[key] = _storage_array(raw, ref, little_endian, path)
  missing = set(refs) - set(storages)
  if missing:
    raise CheckpointError(path,
                          f"storages {sorted(missing)[:5]} referenced but not stored")
  return _resolve(obj, storages, path)


def load_torch_checkpoint(path: str) -> Any:
  """Unpickles a `torch.save` file with tensors as numpy arrays.

  Args:
    path: A local `.pth` / `.pt` file (zip or legacy format).

  Returns:
    The saved object (typically an OrderedDict of name -> numpy array).

  Raises:
    UnsafeCheckpointError: when the pickle names a global outside the allow-list.
    CheckpointError: when the file is missing or not a readable PyTorch checkpoint (truncated,
      corrupted, another format).
  """
  try:
    if zipfile.is_zipfile(path):
      return _load_zip(path)
    with open(path, "rb") as f:
      if f.read(len(ZIP_MAGIC)) == ZIP_MAGIC:
        # A zip's central directory comes last: without it the archive was cut short.
        raise CheckpointError(path, "truncated or damaged zip archive (no central directory)")
    return _load_legacy(path)
  except CheckpointError:
    raise
  except OSError as e:
    raise CheckpointError(path, e.strerror or str(e)) from None
  except Exception as e:  # The parsers met malformed data: each kind raises its own error.
    raise CheckpointError(path, f"truncated or corrupted ({type(e).__name__}: {e})") from None


def is_safetensors(path: str) -> bool:
  """Whether `path` starts like a safetensors file (a header length, then "{").

  Raises:
    CheckpointError: when the file cannot be read.
  """
  try:
    with open(path, "rb") as f:
      start = f.read(SAFETENSORS_HEADER_START + 1)
  except OSError as e:
    raise CheckpointError(path, e.strerror or str(e)) from None
  return len(start) == SAFETENSORS_HEADER_START + 1 and start[-1:] == b"{"


def load_safetensors(path: str) -> dict[str, np.ndarray]:
  """Reads a `.safetensors` file into numpy arrays.

  Raises:
    CheckpointError: when the file is not a readable safetensors file (truncated, a bad header,
      a dtype numpy lacks such as bfloat16).
  """
  try:
    return safetensors.numpy.load_file(path)
  except Exception as e:  # The reader's errors are its own (SafetensorError, TypeError, ...).
    raise CheckpointError(path, f"not a readable safetensors file ({type(e).__name__}: "
                          f"{e})") from None


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a checkpoint's state dict, unwrapping `{"state_dict": ...}` / `{"model": ...}`.

  Args:
    path: A `torch.save` file (`.pth`, `.pt`, Hugging Face's `.bin`) or a `.safetensors` file.

  Returns:
    An ordered dict of parameter / buffer name -> numpy array.

  Raises:
    CheckpointError: as `load_torch_checkpoint` / `load_safetensors`, and when the checkpoint
      holds no name -> tensor mapping.
  """
  obj = load_safetensors(path) if is_safetensors(path) else load_torch_checkpoint(path)
  for key in STATE_DICT_WRAPPER_KEYS:
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
      obj = obj[key]
      break
  if not isinstance(obj, dict) or not obj:
    raise CheckpointError(path, f"no state dict found (got {type(obj).__name__})")
  tensors = collections.OrderedDict(
      (key, value) for key, value in obj.items() if isinstance(value, np.ndarray))
  if not tensors:
    raise CheckpointError(path,
                          f"the state dict holds no tensors (keys: {list(obj)[:5]})")
  return tensors

