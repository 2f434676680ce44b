#!/bin/sh
# Prepare, on a machine with a package registry, what the lent GPU machine lacks (it has no
# registry; see the README, "On a GPU"): wheels for its Python 3.12 and mmcv's source, into
# .gpu/wheels (git-ignored; travels with `carry`). The GPU machine already has torch + CUDA,
# nvcc, ninja, numpy, pandas, scikit-learn, matplotlib, opencv, pillow, pyyaml, rich, scipy,
# seaborn, tensorboard, tqdm.
#   usage: scripts/gpu_bundle.sh [PIP]        (PIP defaults to .venv/bin/pip)
set -eu
pip=${1:-.venv/bin/pip}
dest=.gpu/wheels
mkdir -p "$dest"
plat="--python-version 3.12 --implementation cp --only-binary=:all:"
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do
  plat="$plat --platform $p"
done
# the kit's own needs (pure Python or cp312 wheels), versions as in requirements.txt
$pip download -q --no-deps $plat -d "$dest" \
  mmengine==0.10.7 mmdet==3.3.0 pycocotools==2.0.11 iterative-stratification==0.1.9 \
  tidecv==1.0.1 appdirs==1.4.4 addict==2.4.0 yapf==0.43.0 termcolor==3.1.0 platformdirs \
  tomli terminaltables==3.1.10 shapely==2.1.1 importlib-metadata six
# mmcv has no wheels: its source, built there with the CUDA ops for that card
$pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$dest" mmcv==2.1.0
# the kit itself, as a wheel (configs inside)
$pip wheel -q --no-deps -w "$dest" .
du -sh "$dest"
ls "$dest"
