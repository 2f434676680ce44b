"""The GPU path, tested without a GPU: the mmcv build's CUDA detection, --amp, the GPU check's
dry run; and the real GPU check where CUDA is present."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

SCRIPT = REPO / "scripts" / "mmcv_build_env.sh"


def _fake_bin(tmp: Path, *, nvcc: bool, smi: str | None, torch_cuda: bool,
              capability: str | None) -> Path:
    """A PATH folder with fake nvcc / nvidia-smi, and a fake python answering the script's
    two questions about torch."""
    b = tmp / "bin"
    b.mkdir()
    if nvcc:
        (b / "nvcc").write_text("#!/bin/sh\nexit 0\n")
    if smi is not None:
        (b / "nvidia-smi").write_text(f"#!/bin/sh\nprintf '{smi}'\n")
    cap = f"print('{capability}')" if capability else "raise SystemExit(1)"
    (b / "python").write_text(
        "#!/bin/sh\ncase \"$2\" in\n"
        f"  *torch.version.cuda*) exit {0 if torch_cuda else 1};;\n"
        f"  *get_device_capability*) exec {sys.executable} -c \"{cap}\";;\nesac\nexit 3\n")
    for f in b.iterdir():
        f.chmod(0o755)
    return b


@pytest.mark.parametrize("case, env, expect", [
    (dict(nvcc=False, smi=None, torch_cuda=True, capability=None), {}, "FORCE_CUDA=0"),
    (dict(nvcc=True, smi=None, torch_cuda=False, capability=None), {}, "FORCE_CUDA=0"),
    (dict(nvcc=True, smi="9.0\\n9.0\\n", torch_cuda=True, capability=None), {},
     "FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 "),
    (dict(nvcc=True, smi="8.0\\n9.0\\n", torch_cuda=True, capability=None), {},
     "TORCH_CUDA_ARCH_LIST=8.0;9.0 "),
    (dict(nvcc=True, smi=None, torch_cuda=True, capability="8.6"), {},
     "TORCH_CUDA_ARCH_LIST=8.6 "),
    (dict(nvcc=True, smi="9.0\\n", torch_cuda=True, capability=None),
     {"TORCH_CUDA_ARCH_LIST": "7.5"}, "TORCH_CUDA_ARCH_LIST=7.5 "),
], ids=["no-nvcc", "cpu-torch", "one-card", "two-cards", "torch-capability", "override"])
def test_mmcv_build_env(tmp_path, case, env, expect):
    b = _fake_bin(tmp_path, **case)
    r = subprocess.run(["sh", str(SCRIPT), str(b / "python")], capture_output=True, text=True,
                       env={"PATH": f"{b}:/usr/bin:/bin", **env})
    assert r.returncode == 0, r.stderr
    assert expect in r.stdout + " " and r.stdout.startswith("MMCV_WITH_OPS=1 ")
    if "FORCE_CUDA=1" in r.stdout:
        assert "PIP_NO_CACHE_DIR=1" in r.stdout  # never reuse a cached CPU-only mmcv wheel


def test_mmcv_build_env_without_any_architecture(tmp_path):
    b = _fake_bin(tmp_path, nvcc=True, smi=None, torch_cuda=True, capability=None)
    r = subprocess.run(["sh", str(SCRIPT), str(b / "python")], capture_output=True, text=True,
                       env={"PATH": f"{b}:/usr/bin:/bin"})
    assert r.returncode == 1 and "set TORCH_CUDA_ARCH_LIST" in r.stderr


@pytest.mark.parametrize("gpu", [True, False], ids=["cuda-machine", "cpu-machine"])
def test_makefile_builds_mmcv_with_the_detected_environment(tmp_path, gpu):
    """The Makefile's own install steps run against a fake venv whose pip records the
    environment and arguments it is called with: mmcv gets the detected CUDA settings."""
    b = _fake_bin(tmp_path, nvcc=gpu, smi="9.0\\n" if gpu else None, torch_cuda=gpu,
                  capability=None)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(b / "python")
    calls = tmp_path / "pip_calls"
    pip = venv / "bin" / "pip"
    pip.write_text(f"#!/bin/sh\necho \"FORCE_CUDA=$FORCE_CUDA ARCH=$TORCH_CUDA_ARCH_LIST "
                   f"OPS=$MMCV_WITH_OPS NOCACHE=$PIP_NO_CACHE_DIR | $*\" >> {calls}\n")
    pip.chmod(0o755)
    r = subprocess.run(["make", "-B", "-C", str(REPO), f"VENV={venv}", f"{venv}/.mmcv"],
                       capture_output=True, text=True, env={"PATH": f"{b}:/usr/bin:/bin"})
    assert r.returncode == 0, r.stdout + r.stderr
    lines = calls.read_text().splitlines()
    assert lines[0].endswith("| install torch==2.13.0 numpy==2.4.6 setuptools==80.9.0 wheel")
    mmcv = [x for x in lines if "mmcv==2.1.0" in x]
    assert len(mmcv) == 1 and mmcv[0].endswith("| install --no-build-isolation mmcv==2.1.0")
    if gpu:
        assert mmcv[0].startswith("FORCE_CUDA=1 ARCH=9.0 OPS=1 NOCACHE=1 |"), mmcv[0]
    else:
        assert mmcv[0].startswith("FORCE_CUDA=0 ARCH= OPS=1 NOCACHE= |"), mmcv[0]
    assert (venv / ".mmcv").exists()


def test_amp_options_and_cpu_refusal(tmp_path, prepared, capsys):
    from imat_kit.cli.commands import main
    from imat_kit.mmdet_ext.train import amp_options

    assert amp_options("bf16") == ["optim_wrapper.type=AmpOptimWrapper",
                                   "optim_wrapper.loss_scale=dynamic",
                                   "optim_wrapper.dtype=bfloat16"]
    cfg = str(REPO / "tests" / "configs" / "tiny_test.py")
    base = ["train", cfg, "--work-root", str(tmp_path), "--data-root", str(prepared)]
    assert main([*base, "--amp", "fp16", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "optim_wrapper.type=AmpOptimWrapper" in out and "optim_wrapper.dtype=float16" in out
    import torch

    if not torch.cuda.is_available():
        assert main([*base, "--amp"]) == 2
        assert "--amp bf16 needs a CUDA GPU" in capsys.readouterr().err


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    """The GPU check's whole path at toy size on the CPU: data, the three training runs,
    prediction, submission, the JSON and the table."""
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    rep = json.loads((tmp_path / "gpu_check.json").read_text())
    assert rep["dry_run"] and rep["ok"]
    labels = [x["label"] for x in rep["runs"]]
    assert labels == ["kit R50 heads", "kit R50 all layers", "stock mask-rcnn_r50_fpn_1x"]
    assert all(x["iterations"] == 2 and x["losses_finite"] for x in rep["runs"])
    assert rep["predict"]["images"] == 2 and rep["predict"]["submission_problems"] == []
    assert "| kit R50 heads | fp32 |" in r.stdout and "torch" in rep["versions"]


@pytest.mark.gpu
def test_gpu_check_on_cuda(tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine (the GPU check runs where one is)")
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--iters",
                        "20", "--predict-images", "10", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=1800,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert json.loads((tmp_path / "gpu_check.json").read_text())["ok"]
