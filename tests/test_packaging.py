"""How the package is laid out and installed: nothing of this project shadows another
package when Python runs from the repository root, and the wheel ships the kernel modules
under vlmrl_fast/ops/kernels/ with no top-level `kernels`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KERNEL_MODULES = {"__init__.py", "gae_reference.py", "gae_triton.py",
                  "token_logprobs_reference.py", "token_logprobs_triton.py"}


def run_from_root(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'python'}", **env}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=300)


def test_no_top_level_folder_of_the_repo_is_an_importable_name_of_another_package():
    """Any folder in the repository root is importable from there (as a namespace package
    at least); `kernels` would collide with Hugging Face's `kernels`, which transformers imports."""
    assert not (REPO / "kernels").exists()
    for folder in REPO.iterdir():
        if folder.is_dir() and (folder / "__init__.py").exists():
            pytest.fail(f"{folder.name}/ in the repository root is a Python package")


def test_transformers_hub_kernels_and_vlmrl_fast_import_from_the_repo_root():
    pytest.importorskip("kernels")  # Hugging Face's, a dependency of transformers 5
    proc = run_from_root(
        "import transformers.integrations.hub_kernels, vlmrl_fast, vlmrl_fast.ops, kernels\n"
        "import vlmrl_fast.ops.kernels.gae_reference\n"
        "from kernels import CUDAProperties\n"  # the name whose shadowing broke `make test`
        "print(kernels.__file__)")
    assert proc.returncode == 0, proc.stderr
    kernels_file = Path(proc.stdout.strip().splitlines()[-1])
    assert "site-packages" in kernels_file.parts, kernels_file  # Hugging Face's, not a folder of this repo


def test_cli_runs_from_the_repo_root():
    proc = subprocess.run([sys.executable, "-m", "vlmrl_fast", "envs"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO / "python")})
    assert proc.returncode == 0, proc.stderr
    assert "NumberLine-v0" in proc.stdout


def test_wheel_ships_the_kernels_inside_the_package_and_no_top_level_kernels(tmp_path):
    maturin = shutil.which("maturin") or str(Path(sys.executable).with_name("maturin"))
    if not Path(maturin).exists():
        pytest.skip("maturin is not installed")
    proc = subprocess.run([maturin, "build", "--release", "-q", "-o", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("vlmrl_fast-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"vlmrl_fast", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}, top
    shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith("vlmrl_fast/ops/kernels/")}
    assert shipped == KERNEL_MODULES
    for name in KERNEL_MODULES:  # real files with the package's code, not links
        data = zipfile.ZipFile(wheel).read(f"vlmrl_fast/ops/kernels/{name}")
        assert data == (REPO / "python" / "vlmrl_fast" / "ops" / "kernels" / name).read_bytes()
