"""The .pyi stub of the native module matches the module (mypy.stubtest)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_core_stub_matches_the_native_module():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "python"), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "vlmrl_fast._core",
            "--allowlist",
            str(ROOT / "tests" / "stubtest_allowlist.txt"),
            # Skip analysing numpy/torch: the check is about the stub's names
            # and signatures, and this takes it from minutes to seconds.
            "--mypy-config-file",
            str(ROOT / "tests" / "stubtest_mypy.ini"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
