"""`robustmm run --quick` on 1 process vs N ranks (torchrun): wall times, speed-up, identical outputs.

    python benchmarks/distributed_run.py                       # default job, 1 vs 2 CPU processes
    python benchmarks/distributed_run.py --repeats 3           # three pairs in turn, the median speed-up
    python benchmarks/distributed_run.py --config my.toml --nproc 4 --keep runs/dist
    python benchmarks/distributed_run.py --device cuda --nproc 8   # 1 GPU vs 8 GPUs (nccl)

Both sides run the same job with ``OMP_NUM_THREADS=1`` per process (``--threads``), so on CPU
the N-rank side may use N cores where the single process uses one. Both sides are the real CLI:
``python -m robustmm run CONFIG --quick`` and ``torchrun ... -m -- robustmm run CONFIG --quick``
(``--via worker`` starts the ranks on this script instead, which calls the same ``run_job`` and
logs which rank runs which cell). Prints one JSON object: both wall times of every pair
(``--repeats``: the legs alternate, so a drifting machine affects both; the speed-up is the median
of the pairs', with its range), which cells each rank ran (worker only), the machine and its load
average before and after, and the byte-for-byte comparison of the outputs: results.jsonl metrics
record by record (benchmarks/compare_results.py: timings and
versions aside), the heads' weights, report.md. Exit status 0 when the outputs are identical.

"Identical" is a claim about 1 vs N processes on one machine with the same thread count per
process: the same kernels on the same batches (the job's texts are embedded in fixed chunks on
any number of ranks: ``robustmm.job.parallel.share_texts``). Another CPU (the JSON records torch's
``cpu_capability``) or another thread count sums in another order: outputs then agree within
``robustmm.encoders.base.NUMERIC_TOLERANCE``, not byte for byte.

The speed-up is only meaningful on an otherwise idle machine with at least N free cores: the JSON
records ``os.getloadavg()`` and ``os.cpu_count()`` so a depressed number can be told apart. On the
shared 2-core development machine the single leg alone varied between 114 and 140 s in one hour,
so one pair is not enough to judge a 1.7x target.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TARGET = 1.7


def _worker(config: str, out: str, device: str, shard: str | None, quick: bool = True) -> int:
    """One rank (started by torchrun): init the group, run the (quick) job into ``out``."""
    import logging

    sys.path.insert(0, str(REPO))
    from robustmm import distributed
    from robustmm.job import load_config, run_job

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    for name in ("robustmm.job.parallel", "robustmm.job.figures"):  # "rank k runs CELL", "rank k draws FIGURE"
        logging.getLogger(name).setLevel(logging.INFO)
    if shard:
        os.environ["ROBUSTMM_RUN_SHARD"] = shard
    distributed.init_from_env(device)
    try:
        cfg = load_config(config or None)
        run_job(cfg, out, quick=quick, device=distributed.local_device(device), progress=False)
    finally:
        distributed.destroy()
    return 0


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(k, None)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               GLOO_SOCKET_IFNAME=env.get("GLOO_SOCKET_IFNAME", "lo"), MASTER_ADDR="127.0.0.1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}")
    return env


def _cpu_capability() -> str:
    """torch's CPU kernel level here (AVX2, AVX512 ...): the identity claim holds on this machine."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _leg(cmd: list[str], env: dict[str, str], log_path: Path) -> dict[str, Any]:
    """Run one side; its wall time, exit status and load averages around it."""
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO).returncode
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 2), "rc": rc, "loadavg_before": [round(x, 2) for x in load0],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()], "command": " ".join(cmd[:12]) + " ...",
            "log_tail": log_path.read_text()[-1500:] if rc else ""}


def _same_files(a: Path, b: Path) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    from compare_results import compare

    out: dict[str, Any] = {"results": compare(a / "results.jsonl", b / "results.jsonl", max_diffs=10)}
    r = out["results"]
    out["metrics_identical"] = r["records_before"] == r["records_after"] == r["identical"] > 0
    heads = sorted(p.name for p in (a / "heads").glob("*.safetensors")) if (a / "heads").is_dir() else []
    out["heads"] = len(heads)
    out["heads_identical"] = all((b / "heads" / h).is_file() and (a / "heads" / h).read_bytes() ==
                                 (b / "heads" / h).read_bytes() for h in heads)
    out["report_identical"] = (a / "report.md").is_file() and (b / "report.md").is_file() and \
        (a / "report.md").read_bytes() == (b / "report.md").read_bytes()
    return out


#: what a tiny job keeps: a few items through clean, a 1-step PGD curve and retrieval curve, a 2-epoch
#: calibration and the checks; every other cell kind is switched off
TINY_KEPT = ("clean", "pgd", "calibration", "checks")
TINY_SECTIONS = """[pgd]
quick_steps = 1
quick_retrieval_n = 8
[calibration]
quick_train_n = 8
epochs = 2
quick_steps = 1
[checks]
quick_n = 8
quick_steps = [1, 2]
surrogate = ""
"""


def tiny_job_text(model: str = "", quick_n: int = 16, quick_attack_n: int = 8,
                  modalities: tuple[str, ...] = ("image", "thermal"), examples: bool = False) -> str:
    """The TOML of a tiny job (:data:`TINY_KEPT`) on ``model`` ("" = the shipped one): the ``--tiny`` job
    with the defaults, and tests/test_distributed_run.py's with its own model, sizes and modalities,
    so the two check the same plumbing (the test also draws the example figures)."""
    sys.path.insert(0, str(REPO))
    from robustmm.job import cell_kinds

    run = ([f'model = "{model}"'] if model else []) + [
        f"quick_n = {quick_n}", f"quick_attack_n = {quick_attack_n}", f"modalities = {json.dumps(list(modalities))}",
        "batch_size = 4"]
    off = [k.name for k in cell_kinds() if k.name not in TINY_KEPT and hasattr(k.default(), "enabled")]
    report = f"[report]\nexamples = {str(examples).lower()}\n"
    return "[run]\n" + "\n".join(run) + "\n" + report + TINY_SECTIONS + "".join(f"[{name}]\nenabled = false\n" for name in off)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="", help="job TOML (default: the job shipped in the package)")
    ap.add_argument("--nproc", type=int, default=2, help="ranks of the multi-process side (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="OMP/MKL threads per process (default 1)")
    ap.add_argument("--device", default="cpu", help="cpu (gloo) | cuda (nccl, rank i on cuda:i)")
    ap.add_argument("--shard", choices=("cells", "items"), default=None, help="ROBUSTMM_RUN_SHARD of the ranks")
    ap.add_argument("--via", choices=("worker", "cli"), default="cli",
                    help="start the ranks on `torchrun -m -- robustmm run` (default: the same CLI as the single "
                         "process) or on this script (logs which rank runs which cell)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="measure this many (single, multi) pairs in turn; the speed-up is their median")
    ap.add_argument("--tiny", action="store_true",
                    help="a tiny job instead (the shipped model; clean, PGD, calibration, checks on a few items) "
                         "to check the plumbing in seconds")
    ap.add_argument("--keep", type=Path, default=None, help="keep both output folders here (D1, DN)")
    ap.add_argument("--worker", nargs=2, metavar=("CONFIG", "OUT"),
                    help="be one rank of `torchrun ... distributed_run.py --worker JOB.toml OUT` (\"\" = the shipped job)")
    ap.add_argument("--full", action="store_true", help="with --worker: the full job, not --quick")
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args.worker[0], args.worker[1], args.device, args.shard, quick=not args.full)

    root = args.keep or Path(tempfile.mkdtemp(prefix="robustmm-distbench-"))
    root.mkdir(parents=True, exist_ok=True)
    d1, dn = root / "D1", root / f"D{args.nproc}"
    for d in (d1, dn):
        shutil.rmtree(d, ignore_errors=True)
    env = _env(args.threads)
    if args.tiny:
        (root / "tiny.toml").write_text(tiny_job_text())
        args.config = str(root / "tiny.toml")
    config = [str(Path(args.config).resolve())] if args.config else []
    single = [sys.executable, "-m", "robustmm", "run", *config, "--quick", "-q", "--device", args.device,
              "--out", str(d1)]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(args.nproc),
              "--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    if args.via == "cli":
        multi = [*launch, "-m", "--", "robustmm", "run", *config, "--quick", "-q", "--device", args.device,
                 "--out", str(dn)]
    else:
        multi = [*launch, str(Path(__file__).resolve()), "--device", args.device,
                 *(["--shard", args.shard] if args.shard else []), "--worker", config[0] if config else "", str(dn)]
    pairs = []
    for _ in range(args.repeats):  # alternate the legs: a drifting machine affects both alike
        for d in (d1, dn):
            shutil.rmtree(d, ignore_errors=True)
        multi[multi.index("--master_port") + 1] = str(_free_port())
        one = _leg(single, env, root / "single.log")
        many = _leg(multi, env, root / "multi.log")
        same = _same_files(d1, dn) if one["rc"] == 0 and many["rc"] == 0 else {"metrics_identical": False}
        pairs.append({"single_s": one["wall_s"], "multi_s": many["wall_s"], "loadavg_before": one["loadavg_before"],
                      "speedup": round(one["wall_s"] / many["wall_s"], 3) if many["wall_s"] else None,
                      "identical": bool(same.get("metrics_identical") and same.get("heads_identical", True)
                                        and same.get("report_identical", True))})
        if not pairs[-1]["identical"]:
            break
    per_rank: dict[str, int] = {}
    for m in re.finditer(r"rank (\d+) runs ", (root / "multi.log").read_text()):
        per_rank[m.group(1)] = per_rank.get(m.group(1), 0) + 1
    ups = [p["speedup"] for p in pairs if p["speedup"] is not None]
    speedup = statistics.median(ups) if ups else None
    out = {
        "benchmark": "distributed_run",
        "job": "tiny" if args.tiny else args.config or "default (robustmm/configs/default.toml)", "quick": True,
        "nproc": args.nproc, "threads_per_process": args.threads, "device": args.device,
        "shard": args.shard or os.environ.get("ROBUSTMM_RUN_SHARD", "cells"), "via": args.via,
        "single_process": one, "multi_process": many, "cells_run_per_rank": per_rank,
        "repeats": pairs, "speedup": speedup, "speedup_range": [min(ups), max(ups)] if ups else None,
        "target_speedup": TARGET if args.nproc == 2 else None,
        "meets_target": None if speedup is None or args.nproc != 2 else speedup >= TARGET,
        **same,
        "machine": {"cpu_count": os.cpu_count(), "cpu_capability": _cpu_capability(),
                    "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
                    "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()},
        "outputs": str(root) if args.keep else None,
    }
    print(json.dumps(out, indent=2, default=str))
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if all(p["identical"] for p in pairs) else 1


if __name__ == "__main__":
    sys.exit(main())
