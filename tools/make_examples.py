#!/usr/bin/python3
"""Writes docs/examples/{sneaker,trouser,bag}.png: the first Fashion-MNIST test image
of each class, as used in README.md and docs/API.md.  Needs dataset-fashion-mnist."""
import os
import sys

from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion_mnist  # noqa: E402

WANTED = {7: "sneaker", 1: "trouser", 8: "bag"}


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "examples")
    os.makedirs(out, exist_ok=True)
    images, labels = fashion_mnist.load("test")
    written = set()
    for pixels, label in zip(images, labels):
        label = int(label)
        if label in WANTED and label not in written:
            Image.fromarray(pixels, "L").save(os.path.join(out, WANTED[label] + ".png"))
            written.add(label)
    print("wrote", ", ".join(sorted(WANTED[k] + ".png" for k in written)))


if __name__ == "__main__":
    main()
