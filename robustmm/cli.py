"""The ``robustmm`` command line: run, eval, calibrate, list.

Every error caused by bad input is printed as one line on stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from .errors import RobustMMError
from .outdir import fill_template

log = logging.getLogger("robustmm")
EXIT_USAGE = 2


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda[:N] | mps (default cpu)")
    p.add_argument("--seed", type=int, default=None, help="random seed in [0, 2**63 - 1] (default: the config's, else 0)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors; no progress bars")


def _source(p: argparse.ArgumentParser, split: str = "test") -> None:
    """--model, --data, --split and --root (the model and the dataset a command works on)."""
    p.add_argument("--model", default="tinybind")
    p.add_argument("--data", default="synthscenes", help="dataset name (see `robustmm list datasets`)")
    p.add_argument("--split", default=split, help=f"dataset split (default {split})")
    p.add_argument("--root", default=None, help="folder of a real dataset on disk")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable items (corrupt or empty files, rows pointing nowhere) and record how many")


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
    p.add_argument("--wait", action="store_true", help="if another run holds --out, wait for it instead of failing")
    p.add_argument("--amp", action="store_true",
                   help="attacks under torch.autocast(bfloat16), as `[run] amp = true` (for GPUs)")
    _common(p)

    p = sub.add_parser("eval", help="evaluate one model on one modality, clean or under an attack")
    _source(p)
    p.add_argument("--n", type=int, default=None, help="evaluate the first N items")
    p.add_argument("--modality", required=True)
    p.add_argument("--attack", default=None, help="attack name (see `robustmm list attacks`); none = clean")
    p.add_argument("--eps", nargs="*", default=None,
                   help="budget(s) in the modality's unit: a number or a fraction like 4/255")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--norm", default=None, choices=["linf", "l2"])
    p.add_argument("--source", default=None, help="make adversarial examples on this model (transfer)")
    p.add_argument("--fit-n", type=int, default=None, help="training items for learned attacks (patch; default 1000)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--heads", default=None, help="calibration heads (HEADS.safetensors) applied to --model")
    p.add_argument("--threat", default=None, choices=["head-unaware", "adaptive"],
                   help="with --heads and --attack: examples made on the bare model (head-unaware, the default) "
                   "or through the heads (adaptive)")
    p.add_argument("--defense", default=None, help="score the model behind this input defense (e.g. jpeg)")
    p.add_argument("--defense-setting", action="append", default=None, metavar="KEY=VALUE",
                   help="a setting of --defense, e.g. quality=50 (repeatable)")
    p.add_argument("--adaptive", nargs="?", const="auto", default=None, choices=["auto", "bpda", "eot", "bpda+eot"],
                   help="with --defense and --attack: also the adaptive (auto: BPDA and/or EOT) attack beside the naive one")
    p.add_argument("--eot-samples", type=int, default=None, help="with --adaptive: EOT draws per step (default 8)")
    p.add_argument("--out", default=None, help="output file: NAME.jsonl = a record per line, else JSON (a list for "
                   "several budgets); {model} {data} {modality} {attack} are filled in")
    p.add_argument("--amp", action="store_true",
                   help="run attacks under torch.autocast(bfloat16) (clean and scored embeddings stay float32)")
    _common(p)

    p = sub.add_parser("calibrate", help="train a calibration head for one modality on adversarial examples")
    _source(p, "train")
    p.add_argument("--n", type=int, default=2000, help="training items (default 2000)")
    p.add_argument("--modality", required=True)
    p.add_argument("--objective", default="ce", help="ce | l2 | infonce | a weighted sum like 'ce+0.5*l2'")
    p.add_argument("--eps", default=None,
                   help="training budget, e.g. 4/255 (default: the modality's middle eps)")
    p.add_argument("--steps", type=int, default=None, help="PGD steps for the training examples (default 10)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--adaptive-every", type=int, default=None, help="regenerate examples through the head every K epochs")
    p.add_argument("--clean-only", action="store_true", help="control: train the same head on clean data only")
    p.add_argument("--out", required=True, help="HEADS.safetensors (a .json sidecar is written next to it); "
                   "{model} {data} {modality} {objective} are filled in")
    _common(p)

    p = sub.add_parser("report", help="summary.csv + report.md + report.html + report.tex + plots from result files")
    p.add_argument("results", nargs="+", help="result files (.json or .jsonl)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--latex", default=None, metavar="FILE",
                   help="also write the report's tables as LaTeX (booktabs) to FILE, e.g. paper/tables.tex ('-': stdout)")
    _common(p)

    p = sub.add_parser("check-attack", help="gradient-masking sanity checks of PGD on one model and modality")
    _source(p)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--modality", required=True)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--heads", default=None, help="check the model with these calibration heads (adaptive attack)")
    p.add_argument("--surrogate", default=None,
                   help="model for the transfer check (default: the bare model when --heads is given)")
    p.add_argument("--ensemble", default="cheap", choices=["cheap", "standard", "none"], help="ensemble checks' version")
    p.add_argument("--out", default=None, help="write the checks as JSON")
    _common(p)

    p = sub.add_parser("certify", help="certified accuracy of one modality by randomized smoothing")
    _source(p)
    p.add_argument("--n", type=int, default=None, help="certify the first N items (default all)")
    p.add_argument("--items", type=int, default=None, dest="old_items", help=argparse.SUPPRESS)  # deprecated: --n
    p.add_argument("--modality", required=True)
    p.add_argument("--sigma", type=float, required=True, help="Gaussian noise std in the modality's raw unit")
    p.add_argument("--heads", default=None, help="calibration heads (e.g. noise-trained) applied to --model")
    p.add_argument("--draws", type=int, default=1000, help="noise draws per item for the estimate (default 1000)")
    p.add_argument("--n0", type=int, default=100, help="noise draws per item for the class selection (default 100)")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability (default 0.001)")
    p.add_argument("--radii", type=float, nargs="*", default=None, help="L2 radii to report (default: the modality's)")
    p.add_argument("--smoothadv", type=int, default=0, metavar="K", help="also attack the first K items with SmoothAdv")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", required=True, help="result file: NAME.jsonl = appended, a record per line, else JSON; "
                   "{model} {data} {modality} are filled in")
    _common(p)

    p = sub.add_parser("zoo", help="every registered defense on every modality, audited adaptively (table + figure)")
    p.add_argument("--defenses", default="all", help="'all' or a comma-separated list (see `robustmm list defenses`)")
    p.add_argument("--modalities", default="all", help="'all' or a comma-separated list")
    p.add_argument("--model", default="tinybind")
    p.add_argument("--data", default="synthscenes", help="dataset with train, val and test splits")
    p.add_argument("--n", type=int, default=None, help="test items per pair (default 64; --quick 16)")
    p.add_argument("--n-train", type=int, default=None, help="training items of trained defenses (default 256; --quick 64)")
    p.add_argument("--n-val", type=int, default=None, help="selection items (default 64; --quick 16)")
    p.add_argument("--steps", type=int, default=None, help="PGD/APGD iterations (default 10; --quick 3)")
    p.add_argument("--eot-samples", type=int, default=None, help="EOT draws against randomized defenses (default 4)")
    p.add_argument("--cert-n", type=int, default=None, help="items certified for smoothing entries (default 32)")
    p.add_argument("--cert-draws", type=int, default=None, help="noise draws per certified item (default 256; --quick 64)")
    p.add_argument("--no-checks", action="store_true", help="skip the gradient-masking checks (faster)")
    p.add_argument("--quick", action="store_true", help="small n, few steps, short training")
    p.add_argument("--resume", action="store_true", help="skip the (defense, modality) pairs already in --out")
    p.add_argument("--out", default="runs/zoo", help="output folder (default runs/zoo)")
    _common(p)

    p = sub.add_parser("list", help="list models, attacks, datasets, modalities, defenses or job cell kinds")
    p.add_argument("what", choices=["models", "attacks", "datasets", "modalities", "defenses", "cells"])
    _bench_parsers(sub)
    return ap


def _bench_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="a model (and defense) through a benchmark protocol: one leaderboard entry")
    p.add_argument("model", nargs="?", help="registry name or module:function, as load_encoder takes")
    p.add_argument("--defense", default=None, help="NAME[,key=value...] of `robustmm list defenses`, e.g. jpeg,quality=75")
    p.add_argument("--protocol", default="mm-v1", help="a shipped protocol name or a protocol .json path (default mm-v1)")
    p.add_argument("--out", default="entry.json", help="the entry JSON to write (default entry.json)")
    p.add_argument("--work", default=None, help="resumable work folder (default: --out with .work for .json)")
    p.add_argument("--resume", action="store_true", help="continue the bench in the work folder, skipping finished cells")
    p.add_argument("--overwrite", action="store_true", help="discard earlier results in the work folder")
    p.add_argument("--validate", nargs="+", metavar="ENTRY", default=None,
                   help="only check entry files against the entry schema (exit 2 on the first bad one)")
    _common(p)
    p = sub.add_parser("leaderboard", help="render benchmark entries as a static site (no server, no network)")
    p.add_argument("entries", nargs="+", help="entry JSON files (or folders of them)")
    p.add_argument("--out", default="site", help="output folder (default site/)")
    _common(p)


def cmd_bench(args: argparse.Namespace) -> int:
    from .job.bench_entry import validate_file

    if args.validate is not None:
        if args.model is not None:
            raise RobustMMError("--validate checks entry files: give no MODEL with it")
        for path in args.validate:
            validate_file(path)
            if not args.quiet:
                print(f"{path}: valid")
        return 0
    if args.model is None:
        raise RobustMMError("give the MODEL to benchmark (e.g. `robustmm bench tinybind --out entry.json`)")
    from .distributed import rank
    from .job.bench import BenchRequest, run_bench

    req = BenchRequest(model=args.model, out=args.out, defense=args.defense, protocol=args.protocol, work=args.work,
                       resume=args.resume, overwrite=args.overwrite, seed=args.seed, device=args.device,
                       progress=not args.quiet, command=" ".join(["robustmm", *sys.argv[1:]]))
    entry = run_bench(req)
    if not args.quiet and rank() == 0:
        h = entry["headline"]
        shown = " ".join(f"{m} {v:.3f}" if v is not None else f"{m} -" for m, v in h["per_modality"].items())
        robust = "-" if h["robust"] is None else f"{h['robust']:.3f}"
        print(f"{entry['model']['name']}: robust {robust} ({shown}); wrote {args.out}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from .job.leaderboard import leaderboard_command

    pages = leaderboard_command(args.entries, args.out)
    if not args.quiet:
        print(f"wrote {Path(args.out) / 'index.html'} ({len(pages)} entries)")
    return 0


def _setup_logging(args: argparse.Namespace) -> None:
    verbose = getattr(args, "verbose", 0)
    level = logging.ERROR if getattr(args, "quiet", False) else (
        logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def cmd_list(args: argparse.Namespace) -> int:
    from .job.commands import list_rows

    rows = list_rows(args.what)
    if args.what == "models":
        print("Model families (name or family:spec):")
    width = max((len(k) for k in rows), default=0)
    for k, v in rows.items():
        print(f"  {k:<{width}}  {v}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .job import load_config, run_job
    from .report.tables import CLEAN_HEADERS, clean_rows, text_table

    config = load_config(args.config)
    if args.seed is not None:
        config.run.seed = args.seed
    if args.amp:
        config.run.amp = True
    args.out = fill_template(args.out, model=config.run.model, data=config.run.dataset,
                             config=Path(args.config).stem if args.config else "default")
    results = run_job(config, args.out, quick=args.quick, resume=args.resume, overwrite=args.overwrite,
                      device=args.device, progress=not args.quiet, wait=args.wait)
    from .distributed import rank

    if args.quiet or rank() != 0:  # under torchrun only rank 0 speaks (and writes: see run_job)
        return 0
    if clean := [r for r in results if r.threat == "clean" and r.defense is None]:
        print(f"{clean[0].model['name']} on {clean[0].dataset['name']}/{clean[0].dataset['split']} (n={clean[0].n}), clean:")
        print(text_table(CLEAN_HEADERS, clean_rows(clean)))
    print(f"wrote {Path(args.out) / 'results.jsonl'}, summary.csv, report.md, report.html, report.tex, plots/")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from . import distributed
    from .job.eval_command import EvalRequest, result_line, run_eval, write_eval

    fields = {f: getattr(args, f) for f in ("modality", "model", "data", "split", "root", "n", "attack", "eps", "steps",
                                            "norm", "source", "fit_n", "batch_size", "heads", "threat", "defense",
                                            "defense_setting", "adaptive", "eot_samples", "out", "amp")}
    req = EvalRequest(**fields, seed=args.seed or 0, device=args.device,
                      progress=not args.quiet)
    results = run_eval(req)
    if not args.quiet and distributed.rank() == 0:
        for r in results:
            print(result_line(r))
    out = write_eval(req, results)
    if out and not args.quiet:
        print(f"wrote {out}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .job.commands import calibrate_command

    args.out = fill_template(args.out, model=args.model, data=args.data, modality=args.modality, objective=args.objective)
    keys = ("model", "data", "split", "root", "n", "modality", "objective", "eps", "steps", "epochs", "adaptive_every",
            "clean_only", "out")
    cal = calibrate_command(**{k: getattr(args, k) for k in keys}, seed=args.seed or 0,
                            device=args.device, progress=not args.quiet)
    if not args.quiet:
        m = cal.meta
        print(f"calibrated {m['encoder']}/{m['modality']} ({m['objective']}, {m['n_train']} items): "
              f"attack {m['attack_s']}s, head training {m['train_s']}s, {m['trainable_params']} parameters")
        print(f"wrote {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .job.commands import report_command

    results = report_command(args.results, args.out, latex=args.latex)
    if args.latex == "-":
        sys.stdout.write((Path(args.out) / "report.tex").read_text(encoding="utf-8"))
    elif not args.quiet:
        print(f"wrote {Path(args.out) / 'summary.csv'}, report.md, report.html, report.tex, plots/ ({len(results)} results)"
              + (f", {args.latex}" if args.latex else ""))
    return 0


def cmd_check_attack(args: argparse.Namespace) -> int:
    from .job.commands import check_attack_command

    keys = ("model", "data", "split", "root", "n", "modality", "steps", "heads", "surrogate", "out")
    checks = check_attack_command(**{k: getattr(args, k) for k in keys}, seed=args.seed or 0,
                                  device=args.device, ensemble=None if args.ensemble == "none" else args.ensemble)
    if not args.quiet:
        for c in checks:
            vals = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in c.values.items())
            print(f"[{'ok' if c.passed else 'FAIL'}] {c.name}: {c.detail} ({vals})")
    return 0 if all(c.passed for c in checks) else 1


def cmd_certify(args: argparse.Namespace) -> int:
    from .job.commands import certify_command

    if args.old_items is not None:  # the old spelling of --n, from when --n counted noise draws
        if args.n is not None:
            raise RobustMMError("--items is the old spelling of --n (items) and both are given: --n counts items "
                                "and --draws the noise draws per item, so write --n ITEMS --draws DRAWS")
        log.warning("--items is deprecated: use --n (items; the noise draws per item are --draws)")
        args.n = args.old_items

    args.out = fill_template(args.out, model=args.model, data=args.data, modality=args.modality)
    keys = ("model", "data", "split", "root", "n", "modality", "sigma", "heads", "draws", "n0", "alpha", "out", "radii",
            "smoothadv", "batch_size")
    r = certify_command(**{k: getattr(args, k) for k in keys}, seed=args.seed or 0,
                        device=args.device, progress=not args.quiet)
    if not args.quiet:
        cert = ", ".join(f"r={k}: " + ("not reachable with this n" if v is None else f"{v:.3f}")
                         for k, v in r.metrics["certified"]["top1"].items())
        heads = f" with heads {args.heads}" if args.heads else ""
        print(f"{r.model['name']} {r.modality} n={r.n} sigma={args.sigma:g}{heads}: certified top-1 {cert}")
        print(f"wrote {args.out}")
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from .job.zoo import zoo_command

    summary = zoo_command(model=args.model, data=args.data, defenses=args.defenses, modalities=args.modalities, n=args.n,
                          n_train=args.n_train, n_val=args.n_val, steps=args.steps, eot_samples=args.eot_samples,
                          cert_n=args.cert_n, cert_draws=args.cert_draws, checks_on=not args.no_checks, out=args.out,
                          quick=args.quick,
                          resume=args.resume, seed=args.seed or 0, device=args.device,
                          command="robustmm " + " ".join(sys.argv[1:]) if sys.argv[1:] else None)
    if not args.quiet:
        bad = [f"{r['defense']}/{r['modality']}" for r in summary["rows"] if r.get("naive_overstates")]
        print(f"audited {len(summary['rows'])} (defense, modality) pairs in {summary['wall_s']:.0f}s; naive overstates: "
              f"{', '.join(bad) or 'none'}")
        print(f"wrote {Path(args.out) / 'summary.json'}, records.jsonl, defense_zoo.md, defense_zoo.png")
    return 0


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
        print("robustmm: error: a command is required (see `robustmm --help`)", file=sys.stderr)
        return EXIT_USAGE
    _setup_logging(args)
    from . import distributed
    from .job.arg_checks import check_seed, resolve_device

    started = False
    try:
        check_seed(getattr(args, "seed", None))
        if hasattr(args, "device"):
            args.device = resolve_device(args.device)
        if getattr(args, "skip_bad", False):  # an option of the user-data loaders: `--data NAME,skip_bad=true`
            from .data.registry import with_options

            args.data = with_options(args.data, skip_bad="true")
        handler = {"run": cmd_run, "eval": cmd_eval, "list": cmd_list, "calibrate": cmd_calibrate, "report": cmd_report,
                   "check-attack": cmd_check_attack, "certify": cmd_certify, "zoo": cmd_zoo, "bench": cmd_bench,
                   "leaderboard": cmd_leaderboard}[args.command]
        if distributed.env_world_size() > 1:  # launched by torchrun: one process per rank
            if args.command not in ("eval", "run", "bench"):
                raise RobustMMError(f"multi-process (torchrun) runs support `robustmm eval`, `run` and `bench`, "
                                    f"not {args.command!r}")
            started = distributed.init_from_env(args.device)
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
