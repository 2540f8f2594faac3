"""Distributed plumbing of the trainer: several processes (one per GPU, or gloo processes on the CPU) launched
by ``accelerate launch`` or ``torchrun``, all on accelerate's engine (DDP, FSDP, DeepSpeed ZeRO).

What each process does alone: step its own share of the environments with its own seed stream, generate,
evaluate log-probs, evaluation episodes. What they do together: the gradient all-reduce (the engine's),
metric reductions, the weight broadcast after the warm start, checkpoints (written once, by the main
process, after everybody has saved its RNG state), resume (every process loads).

No silent hangs:
- every collective has the time-out `dist_timeout` of the config (``InitProcessGroupKwargs(timeout=...)``);
- collectives start only after every process has finished its rollout (or evaluation): :func:`wait_for_all`
  is a barrier on the launcher's key-value store that polls instead of blocking in a collective, so rollouts
  of unequal duration never trip the collective time-out (it logs every minute how many it waits for), and a
  process whose heartbeat stops (killed without a word) ends the wait with an error;
- a process that fails publishes its error in that store (:func:`failure_guard`); a watchdog thread in every
  other process sees it within a second and ends its process with that error, even when the process is
  blocked inside a collective.

Test switches (environment variables, read at call time):
- ``VLMRL_FAST_INJECT_FAILURE="RANK:PHASE[:UPDATE]"``: process RANK raises RuntimeError right after the
  barrier named PHASE ("setup", "rollout" or "eval"; "rollout" of update UPDATE only, when given), i.e. when the
  other processes go on into the update's collectives; PHASE "start" raises while setting up.
- ``VLMRL_FAST_INJECT_DELAY="RANK:PHASE:SECONDS"``: process RANK sleeps SECONDS before it arrives at every
  barrier named PHASE (a slow rollout, to show that it does not trip the collective time-out).
- ``VLMRL_FAST_DUMP_WEIGHTS=DIR``: at the end of `train`, every process writes its trainable weights to
  ``DIR/weights_rank<r>.safetensors`` (to check that the processes hold identical weights).

Sharded strategies (FSDP2, ZeRO-3; configs/accelerate/) gather the full weights for each rollout
(:func:`rollout_context`), write checkpoints of the gathered trainable weights without optimizer state, and
cannot resume yet. With one process on one GPU those paths have run (bench/gpu/dist_check.py; bench/README.md).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import sys
import threading
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import torch

INJECT_FAILURE_ENV = "VLMRL_FAST_INJECT_FAILURE"
DUMP_WEIGHTS_ENV = "VLMRL_FAST_DUMP_WEIGHTS"
INJECT_DELAY_ENV = "VLMRL_FAST_INJECT_DELAY"
_KEY = "vlmrl_fast/"
_FAILED = _KEY + "failed"
HEARTBEAT_STALE_S = 120.0  # a process whose watchdog has not beaten for this long is taken for dead


# -- set-up ----------------------------------------------------------------------------------------------
def make_accelerator(cfg: Any, device: str) -> Any:
    """The run's Accelerator: process group with the config's collective time-out, gradient accumulation,
    and DDP told about parameters that may get no gradient (full fine-tuning of a VLM leaves parts of the
    vision tower unused). Starts the failure watchdog when there are several processes."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    handlers = [InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.dist_timeout)),
                DistributedDataParallelKwargs(find_unused_parameters=not cfg.lora)]
    accelerator = Accelerator(cpu=device == "cpu", gradient_accumulation_steps=cfg.grad_accum_steps,
                              kwargs_handlers=handlers)
    if accelerator.num_processes > 1:
        _Watchdog.start(accelerator.process_index)
    maybe_inject_failure("start", accelerator.process_index)
    return accelerator


@contextlib.contextmanager
def model_loading(accelerator: Any) -> Iterator[None]:
    """Around loading the model: under a DeepSpeed ZeRO-3 config with `zero3_init_flag: false`, hide the
    ZeRO-3 config from transformers, which would otherwise partition the weights while loading them
    (accelerate registers the config for transformers whatever the flag says). The model then loads whole,
    the evaluation before RL runs on it like on one GPU, and accelerate.prepare partitions it."""
    plugin = getattr(getattr(accelerator, "state", None), "deepspeed_plugin", None)
    if plugin is None or plugin.zero_stage != 3 or plugin.zero3_init_flag:
        yield
        return
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.set_deepspeed_weakref()


def _store() -> Any:
    """The launcher's key-value store (the default process group's), or None when there is none."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:  # pragma: no cover - a backend without a store
        return None


# -- failures --------------------------------------------------------------------------------------------
class PeerFailure(RuntimeError):
    """Another process failed; the message is its error (``process <rank>: <type>: <message>``)."""


class _Watchdog:
    """A daemon thread that ends this process with another process's published error, and beats a
    heartbeat counter in the store (so that a process killed without a word is noticed at a barrier).

    It is stopped and joined at interpreter exit (atexit runs before the interpreter finalizes): a daemon
    thread still inside a store call when the interpreter finalizes is ended by CPython with pthread_exit
    while it re-takes the GIL in a noexcept C++ destructor, which aborts the process ("terminate called
    without an active exception", SIGABRT) after the job itself succeeded."""

    _thread: threading.Thread | None = None
    _stop = threading.Event()
    poll_s = 0.5
    grace_s = 5.0

    @classmethod
    def start(cls, rank: int) -> None:
        store = _store()
        if store is None or cls._thread is not None:
            return
        cls._stop.clear()
        cls._thread = threading.Thread(target=cls._run, args=(store, rank), name="vlmrl-watchdog", daemon=True)
        cls._thread.start()
        atexit.register(cls.stop)

    @classmethod
    def stop(cls, timeout_s: float = 10.0) -> None:
        """End the thread between two polls and wait for it (idempotent)."""
        thread, cls._thread = cls._thread, None
        cls._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    @classmethod
    def _run(cls, store: Any, rank: int) -> None:
        while not cls._stop.wait(cls.poll_s):
            try:
                store.add(f"{_KEY}alive/{rank}", 1)  # heartbeat, read by wait_for_all
                if not store.check([_FAILED]):
                    continue
                message = store.get(_FAILED).decode(errors="replace")
            except Exception:  # the store went away (normal end of the job): stop watching
                return
            if message.startswith(f"process {rank}:"):
                return  # our own failure: the main thread is already on its way out
            print(f"vlmrl: error: {message} (ending process {rank} too)", file=sys.stderr, flush=True)
            # give the failing process time to end first, so that the launcher names it as the root cause
            time.sleep(cls.grace_s)
            os._exit(1)  # the main thread may be blocked in a collective; nothing else would end it


def publish_failure(rank: int, err: BaseException) -> None:
    """Tell every other process that this one failed with `err` (first failure wins)."""
    store = _store()
    if store is None:
        return
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    message = f"process {rank}: {type(err).__name__}: {text}"
    with contextlib.suppress(Exception):
        store.compare_set(_FAILED, "", message)


@contextlib.contextmanager
def failure_guard() -> Iterator[None]:
    """Wrap a job: an exception escaping it is published to the other processes before it propagates."""
    try:
        yield
    except PeerFailure:
        raise  # published already, by the process that failed
    except BaseException as err:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # the launcher interleaves every process's output: say which one failed, and where
            print(f"[vlmrl_fast] process {dist.get_rank()} failed:\n{traceback.format_exc()}", file=sys.stderr,
                  flush=True)
            publish_failure(dist.get_rank(), err)
            if os.environ.get("TORCHELASTIC_ERROR_FILE"):  # torchrun / accelerate launch: name the root cause
                from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

                with contextlib.suppress(Exception):
                    ErrorHandler().record_exception(err)
            time.sleep(2 * _Watchdog.poll_s)  # let the others read it before this process (maybe the store's host) ends
        raise


def maybe_inject_failure(phase: str, rank: int, update: int | None = None) -> None:
    """Raise the test failure requested by VLMRL_FAST_INJECT_FAILURE for this rank and phase, if any."""
    spec = os.environ.get(INJECT_FAILURE_ENV, "")
    if not spec:
        return
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0].isdigit():
        raise ValueError(f"{INJECT_FAILURE_ENV}={spec!r}: expected RANK:PHASE or RANK:PHASE:UPDATE")
    if int(parts[0]) != rank or parts[1] != phase:
        return
    if len(parts) == 3 and update is not None and int(parts[2]) != update:
        return
    print(f"[vlmrl_fast] injected failure on process {rank} at {time.time():.3f}", file=sys.stderr, flush=True)
    raise RuntimeError(f"injected failure on process {rank} after {phase} ({INJECT_FAILURE_ENV}={spec})")


def prepare(accelerator: Any, agent: torch.nn.Module, optimizer: Any,
            micro_batch_size: int | None = None) -> tuple[Any, Any]:
    """accelerator.prepare(agent, optimizer), after telling FSDP which layers to shard and checkpoint one
    by one: the agent exposes the transformer layer classes of the models inside it (`_no_split_modules`,
    what accelerate's TRANSFORMER_BASED_WRAP reads); without them FSDP would make the whole agent one unit.
    With DeepSpeed, `micro_batch_size` (samples per forward/backward, the config's minibatch_size) fills
    its `train_micro_batch_size_per_gpu`, which accelerate otherwise reads from a DataLoader (PPO has none)."""
    plugin = getattr(getattr(accelerator, "state", None), "deepspeed_plugin", None)
    if plugin is not None and micro_batch_size is not None:
        ds_config = plugin.deepspeed_config
        if ds_config.get("train_micro_batch_size_per_gpu") in (None, "auto"):
            ds_config["train_micro_batch_size_per_gpu"] = int(micro_batch_size)  # accelerate derives the rest
    if not getattr(agent, "_no_split_modules", None):
        present = {type(m).__name__ for m in agent.modules()}
        names: list[str] = []
        for m in agent.modules():
            for n in getattr(m, "_no_split_modules", None) or []:
                if n in present and n not in names:  # configs name classes a model may not contain
                    names.append(n)
        agent._no_split_modules = names  # type: ignore[assignment]
    wait_for_all(accelerator, "setup")  # model loading takes unequal time; prepare's broadcast is a collective
    return accelerator.prepare(agent, optimizer)


# -- sharded weights ---------------------------------------------------------------------------------------
def sharding(accelerator: Any) -> str | None:
    """None (every process holds everything: one process, DDP), "zero2" (optimizer state and gradients
    sharded), "zero3" or "fsdp" (weights sharded too)."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        return "fsdp"
    if kind == DistributedType.DEEPSPEED:
        stage = accelerator.state.deepspeed_plugin.zero_stage
        return "zero3" if stage == 3 else "zero2" if stage else None
    return None


def check_resume_supported(accelerator: Any) -> None:
    """Resuming copies full weights into the parameters: not possible into sharded ones (yet)."""
    kind = sharding(accelerator)
    if kind in ("fsdp", "zero3"):
        raise NotImplementedError(f"--resume with sharded weights ({kind}) is not implemented; resume with the "
                                  "DDP or ZeRO-2 config (the checkpoint holds the full trainable weights)")


@contextlib.contextmanager
def rollout_context(accelerator: Any, agent: Any, wrapped: Any = None) -> Iterator[None]:
    """Around a rollout or an evaluation of unequal duration on each process: with sharded weights (FSDP2,
    ZeRO-3), gather the full weights once on entry (a collective every process reaches at the same point)
    and keep them until exit, so that generation and log-prob evaluation run without collectives; and stop
    transformers from keeping the processes' `generate` calls in lockstep (synced_gpus). Put
    :func:`wait_for_all` inside, at the end. With DDP, ZeRO-2 or one process it does nothing."""
    kind = sharding(accelerator)  # also with one process: the same code path as with many
    if kind not in ("fsdp", "zero3"):
        yield
        return
    base = agent.model
    base.generate = functools.partial(base.generate, synced_gpus=False)
    try:
        if kind == "zero3":
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(agent.parameters()), modifier_rank=None), \
                    _zero3_hooks_paused(wrapped):
                yield
        else:
            plugin = getattr(accelerator.state, "fsdp_plugin", None)
            inner = getattr(plugin, "reshard_after_forward", True)
            with fsdp_gathered(wrapped if wrapped is not None else agent, inner if isinstance(inner, bool) else True):
                yield
    finally:
        base.__dict__.pop("generate", None)


@contextlib.contextmanager
def fsdp_gathered(root: torch.nn.Module, inner_reshard: bool = True) -> Iterator[None]:
    """Every FSDP2 unit under `root` (the module accelerate wrapped) holds its full weights until exit, so
    that generation and evaluation outside the root's forward run without collectives. On exit each unit
    gets back the setting FSDP gave it: `inner_reshard` (the config's reshard_after_forward) for inner
    units, no resharding for the root (FSDP keeps the root's weights between forward and backward;
    resharding them would free storage that autograd still holds)."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in root.modules() if isinstance(m, FSDPModule)]
    if not units:
        raise NotImplementedError("FSDP version 1 is not supported: use fsdp_version: 2 "
                                  "(configs/accelerate/fsdp.yaml)")
    # FSDP sets its units up lazily at the first forward of the root. Generation calls inner units
    # first, and each would set itself up as a root (the training forward then fails with "already
    # been lazily initialized"): set the real root up before anything runs.
    state = root._get_fsdp_state() if hasattr(root, "_get_fsdp_state") else None
    if state is not None and hasattr(state, "_lazy_init"):
        state._lazy_init()
    for m in units:
        m.unshard()
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for m in units:
            m.reshard()
            m.set_reshard_after_forward(False if m is root else inner_reshard, recurse=False)


@contextlib.contextmanager
def _zero3_hooks_paused(engine: Any) -> Iterator[None]:
    """Take ZeRO-3's per-module hooks off the model while its weights are gathered. Those hooks fetch a
    module's parameters before its forward and partition them again after it, whatever gathered them, so
    inside generate they would undo the gathering module by module (and generate outside the training
    forward, where their bookkeeping expects it). They are registered again on exit, as DeepSpeed did."""
    offload = getattr(getattr(engine, "optimizer", None), "parameter_offload", None)
    needed = ("forward_hooks", "backward_hooks", "module", "_register_deepspeed_module")
    if offload is None or not all(hasattr(offload, name) for name in needed):
        yield  # not a ZeRO-3 engine this code knows: leave its hooks alone
        return
    for param in offload.module.parameters():
        active = getattr(param, "ds_active_sub_modules", None)
        if active is not None:
            active.clear()
    for hook in [*offload.forward_hooks, *offload.backward_hooks]:
        hook.remove()
    offload.forward_hooks, offload.backward_hooks = [], []
    try:
        yield
    finally:
        offload._register_deepspeed_module(offload.module, count=[0])


# -- synchronisation -------------------------------------------------------------------------------------
_barrier_count: dict[str, int] = {}


def wait_for_all(accelerator: Any, name: str, update: int | None = None, *, log_every_s: float = 60.0,
                 store: Any = None) -> None:
    """Barrier of all processes that does not run into the collective time-out: each process counts itself
    in on the launcher's store and polls until all have arrived. It ends with PeerFailure when another
    process published a failure, and with RuntimeError when a process's watchdog heartbeat stops for
    HEARTBEAT_STALE_S (a process killed without a word). Put it after work of unequal duration (rollouts,
    evaluation) and before the next collective."""
    world, rank = accelerator.num_processes, accelerator.process_index
    delay = os.environ.get(INJECT_DELAY_ENV, "").split(":")
    if len(delay) == 3 and delay[0] == str(rank) and delay[1] == name:
        time.sleep(float(delay[2]))
    store = store if store is not None else _store() if world > 1 else None
    if store is not None:
        seq = _barrier_count[name] = _barrier_count.get(name, 0) + 1
        key = f"{_KEY}barrier/{name}/{seq}"
        store.add(key, 1)
        t0 = last_log = last_beat_check = time.monotonic()
        beats = {r: (-1, t0) for r in range(world) if r != rank}  # rank -> (last counter, when it changed)
        while (arrived := store.add(key, 0)) < world:
            if store.check([_FAILED]):
                time.sleep(_Watchdog.grace_s)  # the failing process ends first: the launcher names it
                raise PeerFailure(store.get(_FAILED).decode(errors="replace"))
            now = time.monotonic()
            if now - last_beat_check >= 1.0:
                last_beat_check = now
                for r, (count, since) in beats.items():
                    current = store.add(f"{_KEY}alive/{r}", 0)
                    if current != count:
                        beats[r] = (current, now)
                    elif now - since > HEARTBEAT_STALE_S:
                        raise RuntimeError(f"process {r} stopped responding (no heartbeat for "
                                           f"{HEARTBEAT_STALE_S:.0f} s) while process {rank} waited at '{name}'")
            if time.monotonic() - last_log >= log_every_s:
                last_log = time.monotonic()
                print(f"[vlmrl_fast] process {rank}: waiting {last_log - t0:.0f} s for {world - arrived} of "
                      f"{world} processes to finish their {name}", file=sys.stderr, flush=True)
            time.sleep(0.05)
    maybe_inject_failure(name, rank, update)


def broadcast_trainable(accelerator: Any, module: torch.nn.Module) -> None:
    """Copy the main process's trainable weights to every process (after a warm start done per process)."""
    if accelerator.num_processes <= 1:
        return
    import torch.distributed as dist

    wait_for_all(accelerator, "warm start")
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                buf = p.data.to(accelerator.device)
                dist.broadcast(buf, src=0)
                if buf is not p.data:
                    p.data.copy_(buf)


def weights_checksum(module: torch.nn.Module) -> torch.Tensor:
    """float64 [2]: sum and sum of squares of every trainable weight (equal weights give equal sums)."""
    sums, squares = [], []
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:  # reduced where the weight lives, in float64, without a float64 copy of it
                sums.append(torch.sum(p.detach(), dtype=torch.float64))
                squares.append(torch.linalg.vector_norm(p.detach(), 2, dtype=torch.float64) ** 2)
    if not sums:
        return torch.zeros(2, dtype=torch.float64)
    return torch.stack([torch.stack([x.cpu() for x in sums]).sum(), torch.stack([x.cpu() for x in squares]).sum()])


def check_in_sync(accelerator: Any, module: torch.nn.Module, update: int) -> None:
    """All processes must hold the same trainable weights; a difference (gradients not synchronised)
    is a RuntimeError on every process."""
    if accelerator.num_processes <= 1:
        return
    sums = accelerator.gather(weights_checksum(module).to(accelerator.device)[None]).cpu()
    if not bool((sums == sums[0]).all()):
        raise RuntimeError(f"the processes' trainable weights differ after update {update} "
                           f"(checksums {sums[:, 0].tolist()}): gradients were not synchronised")


class _Snapshot:
    """What `checkpoint.save_checkpoint` reads of a module (its trainable named parameters), made of full
    tensors gathered from sharded weights."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self._tensors = tensors

    def named_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, t in self._tensors.items():
            yield name, t.detach().requires_grad_(True)


def full_state_dict(accelerator: Any, module: torch.nn.Module, wrapped: Any = None) -> dict[str, Any] | None:
    """The agent's full state dict gathered from sharded weights (FSDP, ZeRO-3; every process must call
    it), or None when every process holds the full weights (they are then read from the module)."""
    if sharding(accelerator) not in ("fsdp", "zero3"):
        return None
    return accelerator.get_state_dict(wrapped if wrapped is not None else module)


def save_checkpoint_all(accelerator: Any, run_dir: Path, update: int, module: torch.nn.Module,
                        optimizer: Any, state: dict[str, Any], wrapped: Any = None) -> None:
    """Checkpoint on every process: check the weights agree, the other processes write their RNG states,
    then the main process writes the checkpoint folder and its `latest` pointer (atomically), then all
    continue. A checkpoint that `latest` points to therefore always has every process's RNG state.

    With sharded weights (FSDP, ZeRO-3) the full trainable weights are gathered first (a collective) and the
    optimizer state, sharded too, is not saved; with ZeRO-2 (sharded optimizer state) neither."""
    from vlmrl_fast.checkpoint import save_checkpoint

    rank = accelerator.process_index
    kind = sharding(accelerator)
    if kind is not None:
        optimizer = None
    if kind in ("fsdp", "zero3"):
        full = accelerator.get_state_dict(wrapped if wrapped is not None else module)
        names = [n for n, p in module.named_parameters() if p.requires_grad]
        module = _Snapshot({n: full[n] for n in names if full and n in full})  # type: ignore[assignment]
    else:
        check_in_sync(accelerator, module, update)
    if rank != 0:
        save_checkpoint(run_dir, update, module, optimizer, state, rank=rank)
    accelerator.wait_for_everyone()
    if rank == 0:
        save_checkpoint(run_dir, update, module, optimizer, state, rank=0)
    accelerator.wait_for_everyone()


def mean_over_processes(accelerator: Any, record: dict[str, Any], prefix: str = "losses/") -> dict[str, Any]:
    """The record with its `prefix` entries averaged over processes (NaN entries, e.g. a process whose
    minibatches were all skipped, are left out of the mean; the skip counters are summed)."""
    if accelerator.num_processes <= 1:
        return record
    keys = sorted(k for k, v in record.items() if k.startswith(prefix) and isinstance(v, (int, float)))
    summed = {"losses/nonfinite_skipped", "losses/dropped_steps"}
    vals = torch.tensor([[0.0 if v != v else float(v), float(v == v)] for v in (record[k] for k in keys)],
                        dtype=torch.float64, device=accelerator.device)
    tot = accelerator.reduce(vals, reduction="sum").cpu()
    out = dict(record)
    for k, (s, n) in zip(keys, tot.tolist()):
        out[k] = s if k in summed else (s / n if n else float("nan"))
    return out


def dump_weights(accelerator: Any, module: torch.nn.Module) -> None:
    """With VLMRL_FAST_DUMP_WEIGHTS set, write this process's trainable weights there (test switch)."""
    target = os.environ.get(DUMP_WEIGHTS_ENV, "")
    if not target:
        return
    from safetensors.torch import save_file

    from vlmrl_fast.checkpoint import trainable_state

    Path(target).mkdir(parents=True, exist_ok=True)
    save_file(trainable_state(module), str(Path(target) / f"weights_rank{accelerator.process_index}.safetensors"))
