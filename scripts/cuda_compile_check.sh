#!/bin/bash
# Does mmcv 2.1.0 compile its CUDA ops against the Makefile's torch and a current CUDA? A
# compile-only check for a machine without a GPU (or its driver), in a scratch folder, never
# the project's .venv:
#   bash scripts/cuda_compile_check.sh [SCRATCH]      (default /tmp/imat-cuda-check)
#   CLEAN=1 bash scripts/cuda_compile_check.sh        (remove SCRATCH, ~6 GB, at the end)
# 1. a venv with the CUDA build of torch (the Makefile's version, from PyPI, whose Linux wheel
#    is built for CUDA 13.0) and NVIDIA's CUDA 13.0 compiler and headers as pip packages;
# 2. a CUDA_HOME assembled from them (nvidia/cu13: bin, include, nvvm; lib64 with the
#    unversioned libcudart.so the linker needs);
# 3. mmcv 2.1.0's source with patches/mmcv-2.1.0/*.patch applied, built through
#    scripts/mmcv_build_env.sh for TORCH_CUDA_ARCH_LIST (default 9.0: H100/H200), timed;
# 4. the built mmcv._ext: its CUDA fat binary, its kernels, that it loads (no driver needed to
#    load), and its CPU ops against the project's CPU build (.venv), if that exists.
# A second run reuses SCRATCH: downloads and the source tree are kept, so ninja rebuilds only
# what changed (a patch added, say).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
S=${1:-/tmp/imat-cuda-check}
torch_version=$(sed -n 's/.*torch==\([0-9.]*\).*/\1/p' "$repo/Makefile" | head -1)
cuda_pkgs="nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96
           nvidia-cuda-cccl==13.0.85 nvidia-nvvm==13.0.88"
arch=${TORCH_CUDA_ARCH_LIST:-9.0}
mkdir -p "$S"
cd "$S"
# the project's pip configuration points at a CPU-only torch: --isolated reaches PyPI's own
pypi=(--isolated --cert /etc/ssl/certs/ca-certificates.crt)
if [ ! -x venv/bin/python ]; then
  python3 -m venv venv
  venv/bin/pip "${pypi[@]}" download -q --no-deps --only-binary=:all: -d wheels \
    "torch==$torch_version"
  venv/bin/pip "${pypi[@]}" install -q wheels/torch-"$torch_version"-*.whl numpy==2.4.6 \
    setuptools==80.9.0 wheel ninja packaging mmengine==0.10.7 $cuda_pkgs
fi
py=$S/venv/bin/python
cu=$($py -c "import nvidia, os; print(os.path.join(nvidia.__path__[0], 'cu13'))")
mkdir -p home/lib64
for d in bin include nvvm; do ln -sfn "$cu/$d" "home/$d"; done
for f in "$cu"/lib/*; do ln -sf "$f" home/lib64/; done
ln -sf libcudart.so.13 home/lib64/libcudart.so
export CUDA_HOME=$S/home PATH=$S/home/bin:$S/venv/bin:$PATH
echo "torch $($py -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)');" \
     "$(nvcc --version | tail -1); $(gcc --version | head -1); Python $($py -V 2>&1)"
if [ ! -d src/mmcv-2.1.0 ]; then
  venv/bin/pip "${pypi[@]}" download -q --no-deps --no-binary=:all: --no-build-isolation \
    -d src mmcv==2.1.0
  tar xzf src/mmcv-2.1.0.tar.gz -C src
  for p in "$repo"/patches/mmcv-2.1.0/*.patch; do
    [ -e "$p" ] && (cd src/mmcv-2.1.0 && patch -p1 < "$p")
  done
fi
vars=$(TORCH_CUDA_ARCH_LIST=$arch sh "$repo/scripts/mmcv_build_env.sh" "$py")
echo "mmcv build: $vars"
t0=$(date +%s)
(cd src/mmcv-2.1.0 && env $vars "$py" setup.py -q bdist_wheel -d "$S/dist" > "$S/build.log" 2>&1) \
  || { tail -40 "$S/build.log"; echo "mmcv did not compile: $S/build.log"; exit 1; }
echo "mmcv compiled in $(( $(date +%s) - t0 )) s (log: $S/build.log; a re-run only relinks)"
rm -rf ext && mkdir ext && (cd ext && unzip -q "$S"/dist/mmcv-2.1.0-*.whl 'mmcv/_ext*')
so=$(ls ext/mmcv/_ext*.so)
hex=$(readelf -S -W "$so" | awk '$2 == ".nv_fatbin" {print $6}')
fatbin=$(( 16#${hex:-0} ))
kernels=$(nm -C "$so" | grep -c ' t __device_stub__' || true)
echo "mmcv._ext: CUDA fat binary $fatbin bytes, $kernels kernel stubs," \
     "for $(strings -a "$so" | grep -o -- '-arch sm_[0-9]*' | sort -u | tr '\n' ' ')"
[ "$fatbin" -gt 0 ] && [ "$kernels" -gt 100 ] || { echo "no CUDA kernels in $so"; exit 1; }
venv/bin/pip install -q --no-deps --force-reinstall "$S"/dist/mmcv-2.1.0-*.whl
"$py" "$repo/scripts/mmcv_ops_check.py" > ops_cuda.json
echo "it loads without a GPU driver; its ops report CUDA $("$py" -c \
  'import json; print(json.load(open("ops_cuda.json"))["cuda"])')"
if [ -x "$repo/.venv/bin/python" ]; then
  "$repo/.venv/bin/python" "$repo/scripts/mmcv_ops_check.py" > ops_cpu.json
  "$py" - <<'EOF'
import json
a, b = json.load(open("ops_cuda.json")), json.load(open("ops_cpu.json"))
same = {k: a[k] == b[k] for k in a if k not in ("cuda", "compiler")}
print("CPU ops equal to the project's CPU build:", same)
raise SystemExit(0 if all(same.values()) else 1)
EOF
fi
if [ "${CLEAN:-0}" = 1 ]; then
  rm -rf "$S"
  echo "removed $S"
fi
