"""Several processes that fail as one: a timeout of our own, one line naming the process that stopped, no orphans.

torch waits 30 minutes at a collective for a process that stopped (SIGSTOP, a hung file system), and when a
process dies the others print gloo's traceback, one per survivor. Here the strategy waits ``dist_timeout`` seconds
(``fabric_strategy``), and ``peers_watched`` turns a failed collective into one line from one process, naming the
rank that stopped, while the first process of a node stops the children it started (Lightning's launcher would
SIGKILL it a few seconds later, with nothing said).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from datetime import timedelta

import torch.distributed as dist
from lightning_fabric import Fabric
from lightning_fabric.strategies import STRATEGY_REGISTRY

from sskt.config import TrainConfig
from sskt.errors import UserError

CACHE_WAIT = timedelta(days=1)
"""How long the other processes wait for rank 0 to build a soft-label cache (hours on a large dataset)."""

_COLLECTIVE_FAILURES = ("gloo", "nccl", "connection closed", "connection reset", "timed out", "timeout", "broken pipe")


def fabric_strategy(cfg: TrainConfig) -> object:
    """``cfg.strategy`` with ``cfg.dist_timeout`` when it starts several processes through a registered strategy
    that takes a timeout (DDP and its start methods, FSDP, DeepSpeed); otherwise the name, unchanged."""
    if cfg.strategy == "auto" and cfg.devices * cfg.num_nodes == 1:
        return cfg.strategy
    name = "ddp" if cfg.strategy == "auto" else cfg.strategy  # what Fabric's "auto" picks for several processes
    if name not in STRATEGY_REGISTRY.available_strategies():
        return cfg.strategy
    entry = STRATEGY_REGISTRY[name]
    try:
        return entry["strategy"](**entry["init_params"], timeout=timedelta(seconds=cfg.dist_timeout))
    except TypeError:  # a strategy without a timeout (dp, xla): torch's own applies
        return cfg.strategy


@contextlib.contextmanager
def peers_watched(fabric: Fabric, timeout: float) -> Iterator[None]:
    """Run the body; when a collective fails because another process stopped, raise one UserError naming it from
    the first surviving process and exit quietly (status 2) from the others. On any exception the first process
    of a node stops the children it started, so that none is left waiting or stopped."""
    if fabric.world_size == 1:
        yield
        return
    parent = os.getppid()
    try:
        yield
    except BaseException as exc:
        _stop_children(fabric)
        if isinstance(exc, Exception) and _is_collective_failure(exc):
            failed, speaker = _who_stopped(fabric, parent)
            if not speaker:
                raise SystemExit(2) from exc
            raise UserError(_stopped_line(failed, fabric.world_size, timeout, exc)) from exc
        raise


def _is_collective_failure(exc: Exception) -> bool:
    if isinstance(exc, dist.DistError):
        return True
    return isinstance(exc, RuntimeError) and any(word in str(exc).lower() for word in _COLLECTIVE_FAILURES)


def _who_stopped(fabric: Fabric, parent: int) -> tuple[int | None, bool]:
    """``(global rank that stopped or None when unknown, whether this process says so)``: the first process of a
    node knows its children's exits; a child whose parent (the node's first process) is gone names it, and only
    local rank 1 speaks then. With two processes the stopped one is the other."""
    node_first = fabric.global_rank - fabric.local_rank
    children = getattr(getattr(fabric.strategy, "launcher", None), "procs", None) or []
    if fabric.local_rank == 0:
        dead = [i + 1 for i, proc in enumerate(children) if proc.poll() not in (None, 0)]
        other = 1 - fabric.global_rank if fabric.world_size == 2 else None
        return (node_first + dead[0] if dead else other), fabric.global_rank == 0 or bool(dead)
    if _parent_gone(parent):  # the node's first process is gone
        return node_first, fabric.local_rank == 1
    return (1 - fabric.global_rank if fabric.world_size == 2 else None), False


def _parent_gone(parent: int, wait: float = 3.0) -> bool:
    """Whether this process was reparented within ``wait`` seconds: a killed process's sockets close before its
    children are handed on, so its collective partners see the failure a moment before they see it gone."""
    deadline = time.monotonic() + wait
    while os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.05)
    return os.getppid() != parent


def _stopped_line(failed: int | None, world: int, timeout: float, exc: Exception) -> str:
    who = f"process of rank {failed}" if failed is not None else "another process"
    waited = " or did not answer within dist_timeout" if "time" in str(exc).lower() else ""
    return (
        f"the {who} of {world} stopped{waited} ({type(exc).__name__}); the others stop too. Its own output above "
        f"says why; the run resumes from its last finished epoch with --resume true (dist_timeout {timeout:g} s)"
    )


def _stop_children(fabric: Fabric) -> None:
    """SIGKILL the processes this one launched (Lightning's own launcher does the same when one of them dies): a
    child in a collective or stopped by SIGSTOP does not answer anything gentler."""
    for proc in getattr(getattr(fabric.strategy, "launcher", None), "procs", None) or []:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGKILL)


def long_barrier(fabric: Fabric) -> None:
    """A barrier that waits ``CACHE_WAIT`` rather than ``dist_timeout``: the other processes wait here while rank 0
    builds the soft-label cache. A gloo group of its own carries the timeout (it runs beside NCCL too)."""
    if fabric.world_size == 1 or not dist.is_initialized():
        fabric.barrier()
        return
    group = dist.new_group(backend="gloo", timeout=CACHE_WAIT)
    dist.barrier(group=group)
    dist.destroy_process_group(group)
