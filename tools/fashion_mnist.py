"""Fashion-MNIST from Debian's dataset-fashion-mnist package.

The package ships the four gzipped IDX files of the original release under
/usr/share/datasets/fashion-mnist/.  IDX is a big-endian magic (0x00000803
for a 3-D uint8 array, 0x00000801 for 1-D), the dimensions, then raw bytes;
every field is checked so that a truncated or swapped file fails loudly
instead of training on garbage.  FASHION_MNIST_DIR overrides the location.

    images, labels = fashion_mnist.load("test")   # (10000, 28, 28), (10000,) uint8
"""

import gzip
import os
import struct

import numpy as np

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"

CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}

_MAGIC_IMAGES = 0x00000803
_MAGIC_LABELS = 0x00000801


class DatasetError(Exception):
    pass


def data_dir():
    return os.environ.get("FASHION_MNIST_DIR", DEFAULT_DIR)


def available(root=None):
    root = root or data_dir()
    return all(os.path.isfile(os.path.join(root, f))
               for split in _FILES.values() for f in split[:2])


def _read_idx(path, magic, ndim):
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DatasetError(f"{path}: {e}") from None
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DatasetError(f"{path}: truncated header")
    (got,) = struct.unpack(">I", raw[:4])
    if got != magic:
        raise DatasetError(f"{path}: magic 0x{got:08x}, expected 0x{magic:08x}")
    dims = struct.unpack(f">{ndim}I", raw[4:head])
    count = int(np.prod(dims))
    if len(raw) - head != count:
        raise DatasetError(
            f"{path}: {len(raw) - head} data bytes, dimensions {dims} need {count}")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims).copy()


def load(split, root=None):
    """(images (N, 28, 28) uint8, labels (N,) uint8) for split 'train' or 'test'."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    root = root or data_dir()
    img_name, lab_name, n = _FILES[split]
    images = _read_idx(os.path.join(root, img_name), _MAGIC_IMAGES, 3)
    labels = _read_idx(os.path.join(root, lab_name), _MAGIC_LABELS, 1)
    if images.shape != (n, 28, 28):
        raise DatasetError(f"{img_name}: shape {images.shape}, expected ({n}, 28, 28)")
    if labels.shape != (n,):
        raise DatasetError(f"{lab_name}: shape {labels.shape}, expected ({n},)")
    if labels.max() >= len(CLASSES):
        raise DatasetError(f"{lab_name}: label {labels.max()} out of range")
    return images, labels
