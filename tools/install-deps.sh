#!/bin/sh
# Installs every Debian package modeld needs to build, test and benchmark.
# One list, used by README's commands and by .ci/run.  Run as root (or via sudo).
set -eu
build="build-essential autoconf automake libtool pkg-config
  libmicrohttpd-dev libjansson-dev libinih-dev libstb-dev libutf8proc-dev libopenblas-dev libsystemd-dev check"
# The golden and accuracy tests compare with PyTorch on Debian's dataset.
test="python3 python3-torch python3-torchvision python3-numpy python3-pil dataset-fashion-mnist
  curl systemd wrk"
apt_get() { if [ "$(id -u)" = 0 ]; then apt-get "$@"; else sudo apt-get "$@"; fi; }
export DEBIAN_FRONTEND=noninteractive
apt_get update -q
# shellcheck disable=SC2086
apt_get install -y -q --no-install-recommends $build $test
