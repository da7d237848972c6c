"""Multi-process evaluation on ``torch.distributed``: shard items over ranks, gather them back exactly.

``torchrun --nproc_per_node N -m robustmm eval ...`` starts N copies of the CLI. Each rank embeds
(and attacks) only a contiguous shard of the items; :func:`robustmm.evaluate` then gathers the
per-item embeddings (and adversarial captions) in the original item order, so every rank holds the
full set and computes the same metrics a single process would. Only rank 0 prints and writes.

Shards are made of *whole batches* (:func:`shard` with ``align=batch_size``): every rank runs
exactly the batches a single process would run, with the same global item indices. Batch
composition can change floating-point results (convolution kernels pick algorithms by batch size)
and the random draws of attacks seeded per batch, so aligning shards to batches is what makes the
merged metrics identical, not merely close.

Backends: ``gloo`` on CPU, ``nccl`` on CUDA (each rank on ``cuda:LOCAL_RANK``). Only the
environment variables torchrun sets (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) are read. Outside an initialised process group every helper is a no-op
(rank 0 of world 1), so library code can call them unconditionally.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import pickle
from collections.abc import Iterator
from typing import Any

import torch

log = logging.getLogger(__name__)

__all__ = [
    "all_gather_object", "all_gather_tensor", "barrier", "broadcast_object", "gather_cat", "destroy", "env_world_size",
    "group_rank", "group_size", "init_from_env", "is_distributed", "local_device", "local_only", "rank", "shard", "store_add",
    "store_get", "store_poll", "store_set", "timeout_s", "world_size",
]

#: seconds a collective (and a blocking store read) waits for the other ranks before it fails;
#: ``ROBUSTMM_DIST_TIMEOUT`` overrides it (a whole cell of a big job may run this long on one rank)
DEFAULT_TIMEOUT_S = 1800.0

_local_depth = 0  # > 0 inside local_only(): this process acts as a world of one


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def _in_group() -> bool:
    dist = _dist()
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank (False inside :func:`local_only`)."""
    return _local_depth == 0 and _in_group()


def rank() -> int:
    """This process's rank (0 when not distributed or inside :func:`local_only`)."""
    return _dist().get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of ranks (1 when not distributed or inside :func:`local_only`)."""
    return _dist().get_world_size() if is_distributed() else 1


def group_rank() -> int:
    """This process's rank in the process group even inside :func:`local_only` (0 without a group)."""
    return _dist().get_rank() if _in_group() else 0


def group_size() -> int:
    """Ranks in the process group even inside :func:`local_only` (1 without a group)."""
    return _dist().get_world_size() if _in_group() else 1


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Run a block as a single process although a group exists: every helper (and so evaluate,
    the curves, calibration) sees rank 0 of world 1 and makes no collective call.

    How `robustmm run` gives a whole cell to one rank: the cell computes exactly what a single
    process computes, while the other ranks run other cells.
    """
    global _local_depth
    _local_depth += 1
    try:
        yield
    finally:
        _local_depth -= 1


def timeout_s() -> float:
    """The collective timeout in seconds (``ROBUSTMM_DIST_TIMEOUT``, default :data:`DEFAULT_TIMEOUT_S`)."""
    try:
        value = float(os.environ.get("ROBUSTMM_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_TIMEOUT_S
    return value if value > 0 else DEFAULT_TIMEOUT_S


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when unset): whether this process was launched as one of many."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def local_device(device: str) -> str:
    """The device this rank should use: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun (one GPU per rank)."""
    if device == "cuda" and env_world_size() > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def init_from_env(device: str = "cpu") -> bool:
    """Initialise the default process group from torchrun's environment (``env://``).

    ``gloo`` for CPU devices, ``nccl`` for CUDA (after selecting ``cuda:LOCAL_RANK``). Returns
    True if this call created the group; False when ``WORLD_SIZE`` <= 1 or a group already exists.
    """
    dist = _dist()
    if env_world_size() <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.set_device(torch.device(local_device("cuda") if device == "cuda" else device))
    backend = "nccl" if cuda else "gloo"
    # a dead or stuck rank fails the others' collectives after this long instead of hanging them
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s()))
    log.info("process group: rank %d of %d (%s, timeout %.0fs)", dist.get_rank(), dist.get_world_size(), backend,
             timeout_s())
    return True


def destroy() -> None:
    """Tear down the default process group if one exists, every rank together.

    The ranks meet at a barrier first (``monitored_barrier`` on gloo, bounded to a minute), so no
    rank tears its group down while a peer is still finishing the last collective, which can abort
    that peer at exit; a dead peer only costs the bounded wait.
    """
    dist = _dist()
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
        else:
            dist.barrier()
    except Exception as e:  # a peer that died or failed: nothing left to wait for
        log.debug("process group teardown without the final barrier: %s", e)
    dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        _dist().barrier()


def shard(n: int, *, align: int = 1, rank_: int | None = None, world: int | None = None) -> range:
    """The contiguous item range ``[start, stop)`` of ``n`` items that rank ``rank_`` handles.

    Items are grouped into blocks of ``align`` (the batch size) and the blocks are split as evenly
    as possible, earlier ranks taking one extra block when they do not divide; a rank may get an
    empty range when there are fewer blocks than ranks. The shards of all ranks, in rank order,
    tile ``range(n)`` exactly.
    """
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    if align < 1:
        raise ValueError(f"align must be >= 1, got {align}")
    blocks = (n + align - 1) // align
    per, extra = divmod(blocks, w)
    b0 = r * per + min(r, extra)
    b1 = b0 + per + (1 if r < extra else 0)
    return range(min(b0 * align, n), min(b1 * align, n))


def _comm_device() -> torch.device:
    """Where collectives need their tensors: the current CUDA device for nccl, else CPU."""
    if _dist().get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    _dist().all_gather_object(out, obj)
    return out


def all_gather_tensor(t: torch.Tensor | None) -> torch.Tensor:
    """Concatenate every rank's tensor along dim 0, in rank order; shards may differ in length.

    Ranks with nothing to contribute pass ``None`` (or a 0-row tensor); the trailing shape and
    dtype come from the ranks that have rows. Each shard is padded to the longest, gathered with
    ``all_gather`` and trimmed, so values arrive bit-exact. The result is on ``t``'s device (CPU
    when ``t`` is None).
    """
    if not is_distributed():
        if t is None:
            raise ValueError("all_gather_tensor(None) outside a process group")
        return t
    dist = _dist()
    meta = None if t is None or t.shape[0] == 0 else (tuple(t.shape), t.dtype)
    metas = all_gather_object(meta)
    known = [m for m in metas if m is not None]
    if not known:
        raise ValueError("all_gather_tensor: every rank passed an empty tensor")
    tail, dtype = known[0][0][1:], known[0][1]
    if any(m[0][1:] != tail or m[1] != dtype for m in known):
        raise ValueError(f"all_gather_tensor: ranks disagree on shape/dtype: {metas}")
    sizes = [0 if m is None else m[0][0] for m in metas]
    longest = max(sizes)
    home = t.device if t is not None else torch.device("cpu")
    dev = _comm_device()
    buf = torch.zeros((longest, *tail), dtype=dtype, device=dev)
    if sizes[rank()]:
        buf[: sizes[rank()]] = t.to(dev)  # type: ignore[union-attr]
    parts = [torch.empty_like(buf) for _ in sizes]
    dist.all_gather(parts, buf)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)]).to(home)


def gather_cat(chunks: list[torch.Tensor]) -> torch.Tensor | None:
    """This rank's row chunks concatenated, then every rank's, in rank order.

    The one-call form of the shard-compute-gather pattern: each rank handles its :func:`shard`
    of the items and passes the rows it computed; every rank gets all rows in item order. Outside
    a process group it is ``torch.cat(chunks)`` (None for no chunks).
    """
    local = torch.cat(chunks) if chunks else None
    if not is_distributed():
        return local
    return all_gather_tensor(local)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (picklable) on every rank (``obj`` itself when not distributed)."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    _dist().broadcast_object_list(box, src=src)
    return box[0]


# -- the group's key-value store: a work queue and point-to-point results without collectives --

def _store() -> Any:
    """The default group's store (the ``env://`` TCPStore torchrun's rendezvous made)."""
    from torch.distributed import distributed_c10d

    return distributed_c10d._get_default_store()


def store_add(key: str, amount: int = 1) -> int:
    """Atomically add ``amount`` to the counter ``key`` (shared by every rank); returns the new value."""
    return int(_store().add(key, amount))


def store_set(key: str, obj: Any) -> None:
    """Publish ``obj`` (pickled) under ``key`` for any rank to read."""
    _store().set(key, pickle.dumps(obj))


def store_poll(key: str) -> bool:
    """Whether ``key`` has been published (never blocks)."""
    return bool(_store().check([key]))


def store_get(key: str) -> Any:
    """The object published under ``key``, waiting for it up to :func:`timeout_s`."""
    store = _store()
    store.wait([key], datetime.timedelta(seconds=timeout_s()))
    return pickle.loads(store.get(key))
