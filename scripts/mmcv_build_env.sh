#!/bin/sh
# The environment for building mmcv 2.1.0 with its ops, printed as KEY=VALUE words for `env`.
#   usage: scripts/mmcv_build_env.sh PYTHON
# With nvcc on the PATH and a CUDA build of torch in PYTHON: the CUDA ops, for the GPU(s) of
# this machine only (TORCH_CUDA_ARCH_LIST from nvidia-smi's compute capability, or torch's
# view of device 0; set TORCH_CUDA_ARCH_LIST yourself to override, e.g. "8.0;9.0"), with all
# cores. Otherwise the CPU ops (FORCE_CUDA=0), as on the project's 2-core machines.
py=${1:?usage: mmcv_build_env.sh PYTHON}
jobs=$(nproc 2>/dev/null || echo 2)
if command -v nvcc >/dev/null 2>&1 \
    && "$py" -c "import sys, torch; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then
  arch=${TORCH_CUDA_ARCH_LIST:-}
  if [ -z "$arch" ] && command -v nvidia-smi >/dev/null 2>&1; then
    arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null \
           | tr -d ' ' | grep -E '^[0-9]+\.[0-9]+$' | sort -u | paste -sd';' -)
  fi
  if [ -z "$arch" ]; then
    arch=$("$py" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))" \
           2>/dev/null)
  fi
  if [ -z "$arch" ]; then
    echo "mmcv_build_env: nvcc and a CUDA torch are here but no GPU tells its architecture;" \
         "set TORCH_CUDA_ARCH_LIST (e.g. 9.0 for an H100) and run again" >&2
    exit 1
  fi
  # no pip wheel cache: a CPU-only mmcv wheel built earlier would otherwise be reused
  echo "MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=$jobs PIP_NO_CACHE_DIR=1"
else
  echo "MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=$jobs"
fi
