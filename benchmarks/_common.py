"""Shared plumbing of the benchmark scripts: arguments, threads, timing, machine info, one JSON out.

Every benchmark prints exactly one JSON object on stdout; logging, progress bars and anything a
library prints go to stderr (stdout is redirected to stderr while the benchmark runs).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

log = logging.getLogger("benchmark")


def add_common(ap: argparse.ArgumentParser) -> None:
    """--quick, --threads, --device, --seed, -v."""
    ap.add_argument("--quick", action="store_true", help="a tiny run (a few items, 1-2 steps) to check the script works")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: torch's default for this machine); recorded in the JSON")
    ap.add_argument("--device", default="cpu", help="cpu | cuda[:N]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-v", "--verbose", action="store_true", help="INFO logging on stderr")


def setup(args: argparse.Namespace) -> None:
    """Logging on stderr, a fixed thread count, seeds, and a usable device."""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s: %(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if str(args.device).startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available")


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings are real."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: str | torch.device) -> tuple[float, Any]:
    """(seconds, result) of one call, synchronised on GPU."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def summary(times: list[float]) -> dict[str, Any]:
    """Median (the reported number), min and every repeat, in seconds."""
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
            "all_s": [round(t, 4) for t in times]}


def machine_info(device: str) -> dict[str, Any]:
    """What the numbers were measured on."""
    import robustmm

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "robustmm": robustmm.__version__,
        "device": str(device),
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Keep stdout for the one JSON object: anything printed inside goes to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def emit(obj: dict[str, Any]) -> None:
    """Print the benchmark's one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def execute(args: argparse.Namespace, run: Callable[[argparse.Namespace], dict[str, Any]]) -> None:
    """Set up (logging, threads, seed, device), run the benchmark with stdout kept for its one JSON
    object, and print that object."""
    setup(args)
    with stdout_to_stderr():
        result = run(args)
    emit(result)


def rounded(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def image_batches(args: argparse.Namespace) -> tuple[Any, Any, list[list[str]], list[Any]]:
    """The encoder ``args.model`` on ``args.device``, the first ``args.n`` SynthScenes test images, their
    class prompts and their batches of ``args.batch_size`` already on the device: the zero-shot image
    setup the attack benchmarks share."""
    import robustmm
    from robustmm.data.synthscenes import synthscenes
    from robustmm.evaluation import iter_batches

    device = torch.device(args.device)
    enc = robustmm.load_encoder(args.model, device=device)
    data = synthscenes(n=args.n, seed=2, split="test", modalities=("image",))
    prompts = data.task("image").prompts()
    batches = [b.replace(x=b.x.to(device), labels=b.labels.to(device))
               for b in iter_batches(data, "image", args.batch_size, prompts)]
    return enc, data, prompts, batches


class ModulePasses:
    """Counts the forward and backward passes through an ``nn.Module`` (e.g. the classifier a
    torchattacks attack runs on) while installed as a context: a forward hook adds the batch size
    of each call, and a hook on its output adds it again when a gradient flows back through it.
    The same unit as :mod:`robustmm.cost` (passes of the model per item), counted outside robustmm,
    so tools that never call ``Encoder.encode`` compare too."""

    def __init__(self, module: torch.nn.Module):
        self.module, self.forward, self.backward = module, 0, 0

    def _hook(self, module: torch.nn.Module, inputs: Any, out: Any) -> None:
        if not isinstance(out, torch.Tensor):
            return
        n = int(out.shape[0]) if out.dim() else 1
        self.forward += n
        if out.requires_grad:
            def _backward(grad: torch.Tensor) -> None:
                self.backward += n
            out.register_hook(_backward)

    def __enter__(self) -> "ModulePasses":
        self.handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()


def passes_per_item(fn: Callable[[Any], Any], batch: Any, module: torch.nn.Module | None = None) -> dict[str, Any]:
    """Forward and backward model passes per item of one untimed call ``fn(batch)``: counted at
    ``Encoder.encode`` (:func:`robustmm.cost.count_passes`), or with :class:`ModulePasses` on
    ``module`` when given (a torchattacks classifier). Benchmarks report them beside time: passes
    compare across machines and tools, wall time on a shared machine does not."""
    from robustmm.cost import count_passes

    items = max(len(batch), 1)
    meter = ModulePasses(module) if module is not None else contextlib.nullcontext()
    with count_passes() as counted, meter:
        fn(batch)
    src = meter if module is not None else counted
    return {"forward": round(src.forward / items, 3), "backward": round(src.backward / items, 3),
            "counted_at": "nn.Module hooks" if module is not None else "Encoder.encode"}
