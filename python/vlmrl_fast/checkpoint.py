"""Atomic training checkpoints: trainable weights (LoRA adapter or all weights, and the value head),
optimizer state, RNG states of every process, and the loop's step counters.

Layout of one checkpoint, ``<run>/checkpoints/update_000012/``::

    trainable.safetensors   every parameter with requires_grad (adapter or full weights + value head)
    optimizer.pt            optimizer.state_dict()
    rng_<rank>.pt           python, numpy, torch (and CUDA) generator states of process <rank>
    state.json              update counter and whatever the trainer needs to continue (e.g. the eval before RL)

A checkpoint is written into a temporary sibling folder and renamed into place in one `os.replace`, and
``<run>/checkpoints/latest`` (a one-line file naming the folder) is replaced the same way afterwards, so a
crash at any moment leaves either the previous or the new checkpoint, never a half-written one. The
temporary folders and files a killed process leaves behind (names starting with ``.``) are removed by the
next checkpoint write.

Test switch: ``VLMRL_FAST_INJECT_KILL=POINT[:UPDATE]`` makes the process SIGKILL itself at a named point
(`maybe_kill`), e.g. ``checkpoint_files:2`` half-way through writing checkpoint 2; tests/test_crash_resume.py
kills runs there and at timed moments and checks that `--resume` ends where an uninterrupted run ends.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file


INJECT_KILL_ENV = "VLMRL_FAST_INJECT_KILL"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not fit the model it is loaded into."""


def maybe_kill(point: str, update: int | None = None) -> None:
    """SIGKILL this process when VLMRL_FAST_INJECT_KILL names this point (and update, when it gives one).
    Points: checkpoint_files (the temporary folder holds the weights), checkpoint_rename (the folder is in
    place, `latest` not yet), metrics_write (report.py: half of a metrics line is written)."""
    spec = os.environ.get(INJECT_KILL_ENV, "")
    if not spec:
        return
    name, _, at = spec.partition(":")
    if name != point or (at and update is not None and int(at) != update):
        return
    print(f"[vlmrl_fast] killing myself at {spec}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def rng_state() -> dict[str, Any]:
    """The python, numpy, torch and (when present) CUDA generator states of this process."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copies of every parameter that requires grad, by name."""
    return {n: p.detach().to("cpu").contiguous().clone() for n, p in module.named_parameters() if p.requires_grad}


def write_file_atomic(path: Path, text: str) -> None:
    """Write text to path through a temporary file and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; run files are ordinary readable files
    os.replace(tmp, path)


def save_checkpoint(run_dir: str | Path, update: int, module: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None, state: dict[str, Any], *,
                    rank: int = 0, keep: int = 2) -> Path:
    """Write checkpoint `update_<update>` atomically and point `latest` at it; keep the newest `keep`.

    Call on every process: rank 0 writes weights, optimizer, state and its RNG state into the folder; every
    other rank writes its RNG state beside it (``update_<n>.rng_<rank>.pt``). Returns the checkpoint folder.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"update_{update:06d}"
    final = root / name
    if rank != 0:  # other processes only add their RNG state beside the folder rank 0 writes
        fd, tmp_rng = tempfile.mkstemp(dir=root, prefix=f".{name}.rng_{rank}.")
        os.close(fd)
        torch.save(rng_state(), tmp_rng)
        os.replace(tmp_rng, root / f"{name}.rng_{rank}.pt")
        return final
    _remove_leftovers(root)  # of a process killed while writing (the other ranks have written theirs)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.tmp-"))
    try:
        torch.save(rng_state(), tmp / "rng_0.pt")
        save_file(trainable_state(module), str(tmp / "trainable.safetensors"))
        maybe_kill("checkpoint_files", update)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "update": update}, indent=1))
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700
        if final.exists():  # rewritten (e.g. a resumed run reaching the same update): replace whole
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    maybe_kill("checkpoint_rename", update)
    write_file_atomic(root / "latest", name + "\n")
    # update_000000 (where RL starts, after the warm start) is kept: the KL reference of a resumed run
    done = sorted(p for p in root.glob("update_*") if p.is_dir() and p.name != "update_000000")
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
        for f in root.glob(f"{old.name}.rng_*.pt"):
            f.unlink(missing_ok=True)
    return final


def _remove_leftovers(root: Path) -> None:
    """Delete the temporary folders/files (".update_*", ".latest.*") a killed writer left in `root`."""
    for p in root.glob(".*"):
        if p.name.startswith((".update_", ".latest.")) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith((".update_", ".latest.")):
            p.unlink(missing_ok=True)


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The folder `latest` points to; CheckpointError naming the run folder when there is none."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / "latest"
    if not pointer.is_file():
        raise CheckpointError(f"no checkpoint to resume from in {run_dir} (missing {pointer})")
    path = root / pointer.read_text().strip()
    if not (path / "state.json").is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete (no state.json)")
    return path


def load_checkpoint(path: str | Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer | None, *,
                    rank: int = 0, restore_rng: bool = True) -> dict[str, Any]:
    """Load weights (and optimizer and this rank's RNG state) from a checkpoint folder; returns its state.

    Every trainable parameter of `module` must be in the checkpoint with the same shape.
    """
    path = Path(path)
    weights = load_file(str(path / "trainable.safetensors"))
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(weights))
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks trainable parameters, e.g. {missing[0]}")
    with torch.no_grad():
        for n, p in params.items():
            if p.shape != weights[n].shape:
                raise CheckpointError(f"checkpoint {path}: parameter {n} has shape {tuple(weights[n].shape)}, "
                                      f"the model {tuple(p.shape)}")
            p.copy_(weights[n].to(p.device, p.dtype))
    if optimizer is not None and (path / "optimizer.pt").is_file():
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    rng_file = path / f"rng_{rank}.pt"
    if not rng_file.is_file():
        rng_file = path.parent / f"{path.name}.rng_{rank}.pt"
    if restore_rng and rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return json.loads((path / "state.json").read_text())
