"""The ``robustmm`` command line: run, eval, calibrate, list.

Every error caused by bad input is printed as one line on stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import torch

from .errors import RobustMMError

log = logging.getLogger("robustmm")
EXIT_USAGE = 2


def _device(name: str) -> str:
    from .distributed import local_device

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RobustMMError(f"--device {name}: CUDA is not available on this machine")
    return local_device(name)  # under torchrun, plain "cuda" is this rank's GPU


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda[:N] (default cpu)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the config's, else 0)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors; no progress bars")


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), like every other robustmm error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _OneLineParser(prog="robustmm", description="Adversarial robustness of multimodal embedding models.")
    ap.add_argument("--version", action="store_true", help="print the version and exit")
    sub = ap.add_subparsers(dest="command")

    p = sub.add_parser("run", help="the main job (no CONFIG = TinyBind on SynthScenes, all modalities)")
    p.add_argument("config", nargs="?", help="TOML job file (default: the job shipped in the package)")
    p.add_argument("--out", default="runs/default",
                   help="output folder (default runs/default); {model} {data} {config} are filled in")
    p.add_argument("--quick", action="store_true", help="a small, fast version of the job")
    p.add_argument("--resume", action="store_true", help="continue a run in --out, skipping finished cells")
    p.add_argument("--overwrite", action="store_true", help="discard earlier results in --out")
    p.add_argument("--amp", action="store_true",
                   help="attacks under torch.autocast(bfloat16), as `[run] amp = true` (for GPUs)")
    _common(p)

    p = sub.add_parser("eval", help="evaluate one model on one modality, clean or under an attack")
    p.add_argument("--model", default="tinybind")
    p.add_argument("--data", default="synthscenes", help="dataset name (see `robustmm list datasets`)")
    p.add_argument("--split", default="test")
    p.add_argument("--root", default=None, help="folder of a real dataset on disk")
    p.add_argument("--n", type=int, default=None, help="evaluate the first N items")
    p.add_argument("--modality", required=True)
    p.add_argument("--attack", default=None, help="attack name (see `robustmm list attacks`); none = clean")
    p.add_argument("--eps", type=float, nargs="*", default=None, help="budget(s) in the modality's unit")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--norm", default=None, choices=["linf", "l2"])
    p.add_argument("--source", default=None, help="make adversarial examples on this model (transfer)")
    p.add_argument("--fit-n", type=int, default=1000, help="training items for learned attacks (patch)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--heads", default=None, help="calibration heads (HEADS.safetensors) applied to --model")
    p.add_argument("--threat", default="head-unaware", choices=["head-unaware", "adaptive"],
                   help="with --heads: make examples on the bare model (head-unaware) or through the heads (adaptive)")
    p.add_argument("--out", default=None, help="output file; {model} {data} {modality} {attack} are filled in")
    p.add_argument("--amp", action="store_true",
                   help="run attacks under torch.autocast(bfloat16) (clean and scored embeddings stay float32)")
    _common(p)

    p = sub.add_parser("calibrate", help="train a calibration head for one modality on adversarial examples")
    p.add_argument("--model", default="tinybind")
    p.add_argument("--data", default="synthscenes")
    p.add_argument("--split", default="train", help="training split (default train)")
    p.add_argument("--root", default=None)
    p.add_argument("--n", type=int, default=2000, help="training items (default 2000)")
    p.add_argument("--modality", required=True)
    p.add_argument("--objective", default="ce", help="ce | l2 | infonce | a weighted sum like 'ce+0.5*l2'")
    p.add_argument("--eps", type=float, default=None, help="training budget (default: the modality's middle eps)")
    p.add_argument("--steps", type=int, default=10, help="PGD steps for the training examples")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--adaptive-every", type=int, default=None, help="regenerate examples through the head every K epochs")
    p.add_argument("--clean-only", action="store_true", help="control: train the same head on clean data only")
    p.add_argument("--out", required=True, help="HEADS.safetensors (a .json sidecar is written next to it); "
                   "{model} {data} {modality} {objective} are filled in")
    _common(p)

    p = sub.add_parser("report", help="summary.csv + report.md + plots from result files")
    p.add_argument("results", nargs="+", help="result files (.json or .jsonl)")
    p.add_argument("--out", required=True, help="output folder")
    _common(p)

    p = sub.add_parser("check-attack", help="gradient-masking sanity checks of PGD on one model and modality")
    p.add_argument("--model", default="tinybind")
    p.add_argument("--data", default="synthscenes")
    p.add_argument("--split", default="test")
    p.add_argument("--root", default=None)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--modality", required=True)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--heads", default=None, help="check the model with these calibration heads (adaptive attack)")
    p.add_argument("--surrogate", default=None,
                   help="model for the transfer check (default: the bare model when --heads is given)")
    p.add_argument("--out", default=None, help="write the checks as JSON")
    _common(p)

    p = sub.add_parser("list", help="list models, attacks, datasets or modalities")
    p.add_argument("what", choices=["models", "attacks", "datasets", "modalities"])
    return ap


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.ERROR if getattr(args, "quiet", False) else (
        logging.DEBUG if getattr(args, "verbose", 0) >= 2 else logging.INFO if getattr(args, "verbose", 0) == 1 else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def cmd_list(args: argparse.Namespace) -> int:
    from . import list_attacks, list_datasets, list_encoders
    from .modalities import MODALITIES

    if args.what == "models":
        rows = list_encoders()
        print("Model families (name or family:spec):")
    elif args.what == "attacks":
        rows = list_attacks()
    elif args.what == "datasets":
        rows = list_datasets()
    else:
        rows = {m: f"{s.description} domain {s.domain}, {s.norm}, eps grid "
                   + ", ".join(s.format_eps(e) for e in s.eps_grid) + f" ({s.eps_unit})"
                for m, s in MODALITIES.items()}
    width = max((len(k) for k in rows), default=0)
    for k, v in rows.items():
        print(f"  {k:<{width}}  {v}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import load_config, run_job
    from .report.tables import CLEAN_HEADERS, clean_rows, text_table

    config = load_config(args.config)
    if args.seed is not None:
        config["run"]["seed"] = args.seed
    if args.amp:
        config["run"]["amp"] = True
    args.out = _template(args.out, model=config["run"]["model"], data=config["run"]["dataset"],
                         config=Path(args.config).stem if args.config else "default")
    results = run_job(config, args.out, quick=args.quick, resume=args.resume, overwrite=args.overwrite,
                      device=_device(args.device), progress=not args.quiet)
    clean = [r for r in results if r.threat == "clean" and r.defense is None]
    if clean and not args.quiet:
        r0 = clean[0]
        print(f"{r0.model['name']} on {r0.dataset['name']}/{r0.dataset['split']} (n={r0.n}), clean:")
        print(text_table(CLEAN_HEADERS, clean_rows(clean)))
    if not args.quiet:
        print(f"wrote {Path(args.out) / 'results.jsonl'}, summary.csv, report.md, plots/")
    return 0


def _template(path: str, **fields: Any) -> str:
    """Fill ``{model}``-style fields of an output path (values made path-safe)."""
    try:
        return path.format(**{k: str(v).replace("/", "_").replace(":", "_") for k, v in fields.items()})
    except (KeyError, IndexError, ValueError) as e:
        known = " ".join("{" + k + "}" for k in fields)
        raise RobustMMError(f"--out {path!r}: unknown template field {e}; use {known}") from None


def cmd_eval(args: argparse.Namespace) -> int:
    from . import distributed
    from .attacks import build_attack
    from .attacks.amp import AutocastAttack
    from .attacks.base import accepts
    from .data import load_dataset
    from .encoders import load_encoder
    from .evaluation import evaluate
    from .modalities import get_modality
    from .records import write_json, write_jsonl

    spec = get_modality(args.modality)
    device = _device(args.device)
    seed = 0 if args.seed is None else args.seed
    if args.eps is not None and any(e < 0 for e in args.eps):
        raise RobustMMError(f"--eps must be >= 0, got {args.eps}")
    if args.attack is None and (args.eps or args.source):
        raise RobustMMError("--eps/--source need --attack")
    target = load_encoder(args.model, device=device)
    data = load_dataset(args.data, split=args.split, n=args.n, root=args.root)
    source = load_encoder(args.source, device=device) if args.source else None
    threat = None
    defense = None
    if args.heads:
        from .defenses.calibrate import Calibration
        from .defenses.heads import load_heads

        heads, meta = load_heads(args.heads, target)
        bare = target
        target = bare.with_heads(heads)
        defense = Calibration(heads, meta).defense_block()
        if args.attack is not None and source is None:
            threat = args.threat
            source = bare if args.threat == "head-unaware" else target
    results = []
    if args.attack is None:
        results.append(evaluate(target, data, modality=args.modality, batch_size=args.batch_size, seed=seed,
                                defense=defense, progress=not args.quiet))
    else:
        kw: dict[str, Any] = {}
        for opt in ("steps", "norm"):
            if getattr(args, opt) is not None:
                if not accepts(args.attack, opt):
                    raise RobustMMError(f"attack {args.attack!r} has no --{opt}")
                kw[opt] = getattr(args, opt)
        if args.eps is not None and not accepts(args.attack, "eps"):
            raise RobustMMError(f"attack {args.attack!r} has no eps budget")
        if args.eps and len(args.eps) > 1 and not args.heads:
            # a robustness curve: nested balls, one result per budget
            from .evaluation import robustness_curve

            if distributed.rank() == 0 and distributed.is_distributed():
                log.warning("nested robustness curves are not sharded: every rank computes the whole curve")

            attack = build_attack(args.attack, **kw)
            attack = AutocastAttack(attack) if args.amp else attack
            results = robustness_curve(target, data, modality=args.modality, attack=attack, eps_grid=args.eps,
                                       source=source, batch_size=args.batch_size, seed=seed, progress=not args.quiet)
        budgets = (args.eps or [spec.middle_eps]) if accepts(args.attack, "eps") else [None]
        for eps in budgets if not results else []:
            attack = build_attack(args.attack, **({"eps": eps} if eps is not None else {}), **kw)
            attack = AutocastAttack(attack) if args.amp else attack
            fit_split = attack.fit_split
            if fit_split:  # learned attacks (universal patch) are fitted on a training split, scored on held-out data
                attack.fit(source or target, load_dataset(args.data, split=fit_split, n=args.fit_n, root=args.root))
            else:
                attack.fit(source or target, data)
            results.append(evaluate(target, data, modality=args.modality, attack=attack, source=source,
                                    batch_size=args.batch_size, seed=seed, threat=threat, defense=defense,
                                    progress=not args.quiet))
    for r in results:
        c, a = r.metrics["clean"], r.metrics.get("attacked")
        line = f"{r.model['name']} {r.modality} n={r.n}"
        if r.attack:
            line += f" {r.attack['name']}" + (f" eps={spec.format_eps(r.attack['eps'])}" if r.attack.get("eps") is not None else "")
            line += f" ({r.threat})"
        line += f": clean top-1 {c.get('zeroshot_top1', float('nan')):.3f} t2x R@1 {c['t2x_R@1']:.3f}"
        if a:
            line += f" | attacked top-1 {a.get('zeroshot_top1', float('nan')):.3f} t2x R@1 {a['t2x_R@1']:.3f}"
        if not args.quiet and distributed.rank() == 0:
            print(line)
    if args.out and distributed.rank() == 0:  # multi-process: every rank holds the same results; rank 0 writes
        out = _template(args.out, model=args.model, data=args.data, modality=args.modality, attack=args.attack or "clean")
        if len(results) == 1 and not out.endswith(".jsonl"):
            write_json(out, results[0])
        else:
            write_jsonl(out, results)
        if not args.quiet:
            print(f"wrote {out}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .defenses.calibrate import calibrate, default_attack
    from .encoders import load_encoder

    if args.eps is not None and args.eps < 0:
        raise RobustMMError(f"--eps must be >= 0, got {args.eps}")
    if args.clean_only and args.adaptive_every:
        raise RobustMMError("--clean-only and --adaptive-every exclude each other")
    args.out = _template(args.out, model=args.model, data=args.data, modality=args.modality, objective=args.objective)
    enc = load_encoder(args.model, device=_device(args.device))
    data = load_dataset(args.data, split=args.split, n=args.n, root=args.root)
    attack = default_attack(args.modality, args.modality in data.tasks, eps=args.eps, steps=args.steps)
    cal = calibrate(enc, data, modality=args.modality, objective=args.objective, attack=attack, epochs=args.epochs,
                    adaptive_every=args.adaptive_every, clean_only=args.clean_only,
                    seed=0 if args.seed is None else args.seed, progress=not args.quiet)
    cal.save(args.out)
    if not args.quiet:
        m = cal.meta
        print(f"calibrated {m['encoder']}/{m['modality']} ({m['objective']}, {m['n_train']} items): "
              f"attack {m['attack_s']}s, head training {m['train_s']}s, {m['trainable_params']} parameters")
        print(f"wrote {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .pipeline import write_report
    from .records import load_results

    for f in args.results:
        if not Path(f).exists():
            raise RobustMMError(f"result file not found: {f}")
    try:
        results = load_results(args.results)
    except (ValueError, KeyError, TypeError) as e:
        raise RobustMMError(f"cannot read results: {e}") from None
    if not results:
        raise RobustMMError("no results in " + ", ".join(args.results))
    write_report(results, args.out)
    if not args.quiet:
        print(f"wrote {Path(args.out) / 'summary.csv'}, report.md, plots/ ({len(results)} results)")
    return 0


def cmd_check_attack(args: argparse.Namespace) -> int:
    from .attacks import build_attack
    from .checks import checks_to_dict, sanity_checks
    from .data import load_dataset
    from .encoders import load_encoder
    from .persist import atomic_write_text

    device = _device(args.device)
    enc = load_encoder(args.model, device=device)
    surrogate = load_encoder(args.surrogate, device=device) if args.surrogate else None
    if args.heads:
        from .defenses.heads import load_heads

        heads, _ = load_heads(args.heads, enc)
        surrogate = surrogate or enc
        enc = enc.with_heads(heads)
    data = load_dataset(args.data, split=args.split, n=args.n, root=args.root)
    seed = 0 if args.seed is None else args.seed
    checks = sanity_checks(enc, data, modality=args.modality, attack=build_attack("pgd", steps=args.steps, seed=seed),
                           surrogate=surrogate, seed=seed)
    if not args.quiet:
        for c in checks:
            vals = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in c.values.items())
            print(f"[{'ok' if c.passed else 'FAIL'}] {c.name}: {c.detail} ({vals})")
    if args.out:
        atomic_write_text(args.out, json.dumps(checks_to_dict(checks), indent=2) + "\n")
    return 0 if all(c.passed for c in checks) else 1


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a one-line usage error (2)
        return int(e.code or 0)
    if args.version:
        from . import __version__

        print(f"robustmm {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    _setup_logging(args)
    from . import distributed

    started = False
    try:
        handler = {"run": cmd_run, "eval": cmd_eval, "list": cmd_list, "calibrate": cmd_calibrate, "report": cmd_report,
                   "check-attack": cmd_check_attack}[args.command]
        if distributed.env_world_size() > 1:  # launched by torchrun: one process per rank
            if args.command != "eval":
                raise RobustMMError(f"multi-process (torchrun) runs support `robustmm eval` only, not {args.command!r}")
            started = distributed.init_from_env(_device(args.device))
        return handler(args)
    except (RobustMMError, OSError) as e:  # bad input, or a file the user named that cannot be read/written
        print(f"robustmm {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("robustmm: interrupted", file=sys.stderr)
        return 130
    finally:
        if started:
            distributed.destroy()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
