#!/bin/sh
# On the lent GPU machine (no registry), from the repository root, with .gpu carried:
#   sh scripts/gpu_run.sh build    # install the wheels, build mmcv with CUDA ops (one call)
#   sh scripts/gpu_run.sh check    # benchmarks/gpu_check.py, results into $OUT (next call)
# Everything lands in .gpu/site, which a warm machine keeps between calls.
set -eu
site=$PWD/.gpu/site
py=${PYTHON:-python3}
export PYTHONPATH="$site:$PWD"
case "${1:-}" in
  build)
    mkdir -p "$site"
    $py -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" \
      $(ls .gpu/wheels/*.whl | grep -v '/imat_kit-')
    rm -rf /tmp/mmcv-src && mkdir -p /tmp/mmcv-src
    tar xzf .gpu/wheels/mmcv-2.1.0.tar.gz -C /tmp/mmcv-src
    for p in patches/mmcv-2.1.0/*.patch; do
      [ -e "$p" ] && (cd /tmp/mmcv-src/mmcv-2.1.0 && patch -p1 < "$OLDPWD/$p")
    done
    vars=$(sh scripts/mmcv_build_env.sh "$py")
    echo "mmcv build: $vars"
    t0=$(date +%s)
    env $vars $py -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" \
      /tmp/mmcv-src/mmcv-2.1.0
    echo "mmcv built in $(( $(date +%s) - t0 )) s"
    $py -c "from mmcv.ops import get_compiling_cuda_version as v; print('mmcv ops CUDA', v())"
    ;;
  check)
    shift
    $py benchmarks/gpu_check.py --out "${OUT:-outputs/gpu_check}" "$@"
    ;;
  *)
    echo "usage: sh scripts/gpu_run.sh build|check [gpu_check options]" >&2
    exit 2
    ;;
esac
