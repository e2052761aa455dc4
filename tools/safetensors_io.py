"""Minimal safetensors reader and writer for torch tensors.

Debian packages no Python safetensors, and the format is small enough to
write by hand: an 8-byte little-endian header length, a JSON header naming
each tensor's dtype, shape and byte range, then the raw little-endian data.
The layout follows the reference implementation so that files written here
load anywhere: the header is space-padded to a multiple of 8 and tensors are
stored back to back, larger element sizes first, then by name (for a file of
one dtype that is simply name order).  Keeping big elements first keeps every
tensor aligned to its own element size, which lets a reader such as
engine/safetensors.c point straight into an mmap.

    save_file({"w": torch.zeros(2, 3)}, "model.safetensors", metadata={...})
    tensors, metadata = load_file("model.safetensors")
"""

import json
import struct

import numpy as np
import torch

# dtype name -> (torch dtype, bytes per element)
DTYPES = {
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
}
_NAME_OF = {td: name for name, (td, _) in DTYPES.items()}

# numpy has no bfloat16 and torch 1.13 cannot wrap numpy uint16, so raw
# bytes travel through numpy as a same-sized type that both understand.
_NUMPY_CARRIER = {
    torch.float32: np.dtype("<f4"),
    torch.float16: np.dtype("<f2"),
    torch.bfloat16: np.dtype("<i2"),
    torch.int64: np.dtype("<i8"),
}

# Refuse absurd headers before reading them; the reference uses 100 MB.
MAX_HEADER = 100 * 1000 * 1000


class SafetensorsError(ValueError):
    pass


def _tensor_bytes(t):
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    arr = t.numpy()
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def save_file(tensors, path, metadata=None):
    """Write a dict name -> torch.Tensor; metadata is a dict of str -> str."""
    entries = []
    for name, t in tensors.items():
        if not isinstance(name, str) or not name:
            raise SafetensorsError("tensor names must be non-empty strings")
        if name == "__metadata__":
            raise SafetensorsError("'__metadata__' is reserved")
        if not isinstance(t, torch.Tensor):
            raise SafetensorsError(f"{name}: not a torch.Tensor")
        if t.dtype not in _NAME_OF:
            raise SafetensorsError(f"{name}: unsupported dtype {t.dtype}")
        entries.append((name, t))
    entries.sort(key=lambda e: (-DTYPES[_NAME_OF[e[1].dtype]][1], e[0]))

    header = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise SafetensorsError("metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    blobs = []
    offset = 0
    for name, t in entries:
        blob = _tensor_bytes(t)
        header[name] = {
            "dtype": _NAME_OF[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)

    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def load_file(path):
    """Read a file back: (dict name -> torch.Tensor, metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise SafetensorsError(f"{path}: shorter than the 8-byte header length")
    (hlen,) = struct.unpack("<Q", raw[:8])
    if hlen > MAX_HEADER or 8 + hlen > len(raw):
        raise SafetensorsError(f"{path}: header length {hlen} out of range")
    try:
        header = json.loads(raw[8:8 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: bad JSON header: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data = memoryview(raw)[8 + hlen:]

    tensors = {}
    covered = []
    for name, info in header.items():
        try:
            dtype, size = DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{path}: bad header entry for '{name}'") from None
        count = 1
        for d in shape:
            if d < 0:
                raise SafetensorsError(f"{path}: '{name}' has a negative dimension")
            count *= d
        if not 0 <= begin <= end <= len(data) or end - begin != count * size:
            raise SafetensorsError(
                f"{path}: '{name}' offsets [{begin}, {end}] do not fit shape {shape}")
        arr = np.frombuffer(data[begin:end], dtype=_NUMPY_CARRIER[dtype]).copy()
        t = torch.from_numpy(arr)
        if dtype == torch.bfloat16:
            t = t.view(torch.bfloat16)
        tensors[name] = t.reshape(shape)
        covered.append((begin, end))

    # The format requires the data section to be exactly the tensors, no gaps.
    covered.sort()
    pos = 0
    for begin, end in covered:
        if begin != pos:
            raise SafetensorsError(f"{path}: gap or overlap in the data section at byte {pos}")
        pos = end
    if pos != len(data):
        raise SafetensorsError(f"{path}: {len(data) - pos} trailing bytes after the last tensor")
    return tensors, metadata
