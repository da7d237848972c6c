"""The library side of `robustmm eval`: one model on one modality, clean, under an attack at one
or more budgets, transferred from a source model, or through calibration heads.

:class:`EvalRequest` holds the command's options (the CLI fills it from its arguments);
:func:`run_eval` checks them all and the output path before any model is loaded, then returns
the results; :func:`write_eval` writes them and :func:`result_line` prints one line each.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from .. import distributed
from ..errors import RobustMMError
from ..outdir import check_writable_file, fill_template
from ..persist import atomic_write_text
from ..records import Result, append_jsonl, checked_dict, write_json
from ..report.defense_tables import adaptive_label
from . import arg_checks as checks

log = logging.getLogger(__name__)
FIT_N = 1000  # training items of a learned attack (the universal patch) when --fit-n is not given
EOT_SAMPLES = 8  # EOT draws per step of the adaptive attack on a randomized defense


@dataclasses.dataclass
class EvalRequest:
    """The options of `robustmm eval` (see ``robustmm eval --help``)."""

    modality: str
    model: str = "tinybind"
    data: str = "synthscenes"
    split: str = "test"
    root: str | None = None
    n: int | None = None
    attack: str | None = None
    eps: list[float | str] | None = None  # numbers or fractions ("4/255")
    steps: int | None = None
    norm: str | None = None
    source: str | None = None
    fit_n: int | None = None  # training items of a learned attack (None: FIT_N)
    batch_size: int = 128
    heads: str | None = None
    threat: str | None = None  # with heads and an attack: head-unaware (the default) or adaptive
    defense: str | None = None
    defense_setting: list[str] | None = None
    adaptive: str | None = None  # auto | bpda | eot | bpda+eot (with --defense and --attack)
    eot_samples: int | None = None  # with adaptive: EOT draws per step (None: EOT_SAMPLES)
    out: str | None = None
    amp: bool = False
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    def out_path(self) -> str | None:
        """``out`` with its ``{model} {data} {modality} {attack}`` fields filled in (None without
        ``out``; an empty ``out`` is refused by the checks, never taken as "no output")."""
        if self.out is None:
            return None
        return fill_template(self.out, model=self.model, data=self.data, modality=self.modality,
                             attack=self.attack or "clean")

    def attack_settings(self) -> dict[str, Any]:
        """The attack's settings from the options: ``steps`` and ``norm`` when given, ``seed`` (the
        random starts of PGD, APGD and Square follow ``--seed``, and the record says so), and the
        modality for an attack made for one (the universal patch is fitted on ``modality``)."""
        import inspect

        from ..attacks.base import attack_class

        kw = {opt: getattr(self, opt) for opt in ("steps", "norm") if getattr(self, opt) is not None}
        named = inspect.signature(attack_class(self.attack).__init__).parameters if self.attack else {}
        kw |= {"seed": self.seed} if "seed" in named else {}
        return kw | ({"modality": self.modality} if "modality" in named else {})  # named, not swallowed by **kw

    def eot(self) -> int:
        """EOT draws per step of the adaptive attack (``eot_samples``, else :data:`EOT_SAMPLES`)."""
        return EOT_SAMPLES if self.eot_samples is None else self.eot_samples


def _check(req: EvalRequest) -> None:
    """Every check that needs no model: counts, budgets, names, option combinations, attack
    settings, input files and the output (never '' nor one of the inputs)."""
    checks.check_input_modality(req.modality)
    for flag, value in (("--n", req.n), ("--batch-size", req.batch_size), ("--fit-n", req.fit_n)):
        checks.check_count(value, flag)
    checks.check_seed(req.seed)
    req.eps = checks.check_budgets(req.eps, modality=req.modality, norm=req.norm)
    checks.check_out_text(req.out)
    checks.check_models(model=req.model, source=req.source)
    checks.check_data(req.data, req.root, req.split, req.n)
    _check_attack(req)
    if req.threat is not None and not (req.heads and req.attack and not req.source):
        raise RobustMMError("--threat needs --heads and --attack without --source (it says how the heads are attacked)")
    if req.eot_samples is not None and not req.adaptive:
        raise RobustMMError("--eot-samples needs --adaptive (it sets the EOT draws of the adaptive attack)")
    _check_defense(req)
    checks.check_heads_file(req.heads, req.modality)
    out = req.out_path()
    if out and distributed.rank() == 0:
        checks.check_not_an_input([out], checks.input_paths(models=[req.model, req.source], heads=req.heads, root=req.root))
        check_writable_file(out, "--out")


def _check_attack(req: EvalRequest) -> None:
    """The attack options: none without ``--attack`` (they would be ignored), else a known attack
    that takes them, built once per budget so that its own checks run, and its training split."""
    from ..attacks import build_attack
    from ..attacks.base import accepts, attack_class

    if req.attack is None:
        given = [f for f, v in (("--eps", req.eps), ("--source", req.source), ("--steps", req.steps),
                                ("--norm", req.norm), ("--fit-n", req.fit_n)) if v is not None]
        if given or req.amp:
            raise RobustMMError(f"{'/'.join(given) or '--amp'} need{'s' if len(given) < 2 else ''} --attack")
        return
    attack_class(req.attack)  # an unknown name: "did you mean", before any model loads
    for opt in ("steps", "norm"):
        if getattr(req, opt) is not None and not accepts(req.attack, opt):
            raise RobustMMError(f"attack {req.attack!r} has no --{opt}")
    if req.eps is not None and not accepts(req.attack, "eps"):
        raise RobustMMError(f"attack {req.attack!r} has no eps budget")
    for eps in req.eps or [None]:  # the attack's own checks of its settings (steps >= 0, modality, ...)
        built = build_attack(req.attack, **req.attack_settings(), **({"eps": eps} if eps is not None else {}))
    if req.fit_n is not None and not built.fit_split:
        raise RobustMMError(f"--fit-n is for learned attacks (patch); {req.attack!r} is not fitted on training data")
    if built.fit_split:
        checks.check_data(req.data, req.root, built.fit_split, req.fit_n or FIT_N, "--fit-n")


def _check_defense(req: EvalRequest) -> Any:
    """The input defense of the request, built and checked (None without ``--defense``)."""
    from .cells.input_defenses import check_adaptive, make_defense, parse_settings

    if req.defense is None:
        if req.defense_setting or req.adaptive:
            raise RobustMMError("--defense-setting/--adaptive need --defense")
        return None
    if req.heads:
        raise RobustMMError("--defense and --heads exclude each other")
    if req.source:
        raise RobustMMError("--defense and --source exclude each other")
    if req.adaptive and req.attack is None:
        raise RobustMMError("--adaptive needs --attack")
    keys = [setting.partition("=")[0] for setting in req.defense_setting or []]
    if twice := sorted({k for k in keys if keys.count(k) > 1}):  # the last one would silently win
        raise RobustMMError(f"--defense-setting {twice[0]} is given more than once")
    transform = make_defense(req.defense, parse_settings(req.defense_setting))
    transform.check(req.modality)
    if req.adaptive:  # BPDA with nothing to approximate, EOT on a deterministic defense, samples < 1
        check_adaptive(transform, req.adaptive, req.eot())
    return transform


def run_eval(req: EvalRequest) -> list[Result]:
    """The results of one `robustmm eval` (a robustness curve when several budgets are given
    without heads, else one result per budget); nothing is loaded before every check passes."""
    from ..attacks import build_attack
    from ..attacks.amp import AutocastAttack
    from ..attacks.base import accepts
    from ..data import load_dataset
    from ..encoders import load_encoder
    from ..evaluation import evaluate
    from ..modalities import get_modality

    _check(req)
    spec = get_modality(req.modality)
    data = load_dataset(req.data, split=req.split, n=req.n, root=req.root)  # data errors before the model loads
    target = load_encoder(req.model, device=req.device)
    source = load_encoder(req.source, device=req.device) if req.source else None
    threat, defense = None, None
    if req.heads:
        from ..encoders.heads import Calibration, load_heads

        heads, meta = load_heads(req.heads, target)
        bare = target
        target = bare.with_heads(heads)
        checks.check_defense_changes(bare, target, data, req.modality)
        defense = Calibration(heads, meta).defense_block()
        if req.attack is not None and source is None:
            threat = req.threat or "head-unaware"
            source = bare if threat == "head-unaware" else target
    common: dict[str, Any] = {"batch_size": req.batch_size, "seed": req.seed, "progress": req.progress}
    kw = req.attack_settings()

    def make(**extra: Any) -> Any:
        attack = build_attack(req.attack, **extra, **kw)
        return AutocastAttack(attack) if req.amp else attack

    if req.defense:
        return _eval_defended(req, target, data, make, common)
    if req.attack is None:
        return [evaluate(target, data, modality=req.modality, defense=defense, **common)]

    if req.eps and len(req.eps) > 1 and not req.heads:  # a robustness curve: nested balls, one result per budget
        from ..evaluation import robustness_curve

        if distributed.rank() == 0 and distributed.is_distributed():
            log.warning("nested robustness curves are not sharded: every rank computes the whole curve")
        return robustness_curve(target, data, modality=req.modality, attack=make(), eps_grid=req.eps, source=source,
                                **common)
    results = []
    for eps in (req.eps or [spec.middle_eps]) if accepts(req.attack, "eps") else [None]:
        attack = make(**({"eps": eps} if eps is not None else {}))
        if attack.fit_split:  # learned attacks (universal patch) are fitted on a training split, scored on held-out data
            attack.fit(source or target, load_dataset(req.data, split=attack.fit_split, n=req.fit_n or FIT_N, root=req.root))
        else:
            attack.fit(source or target, data)
        results.append(evaluate(target, data, modality=req.modality, attack=attack, source=source, threat=threat,
                                defense=defense, **common))
    return results


def _eval_defended(req: EvalRequest, target: Any, data: Any, make: Any, common: dict[str, Any]) -> list[Result]:
    """``target`` behind ``req.defense``: clean without an attack, else per budget the naive result
    and, with ``req.adaptive``, the adaptive one (BPDA / EOT) beside it."""
    from ..attacks.base import accepts
    from ..encoders.input_transforms import defend
    from ..modalities import get_modality
    from .cells.input_defenses import adaptive_for, score_defense

    transform = _check_defense(req)
    if req.attack is None:
        return score_defense(target, data, modality=req.modality, transform=transform, attack=None, **common)
    budgets = (req.eps or [get_modality(req.modality).middle_eps]) if accepts(req.attack, "eps") else [None]
    results: list[Result] = []
    for eps in budgets:
        attack = make(**({"eps": eps} if eps is not None else {})).resolve(req.modality)
        adaptive = adaptive_for(defend(target, transform), attack, eot_samples=req.eot(),
                                mode=req.adaptive) if req.adaptive else None
        results += score_defense(target, data, modality=req.modality, transform=transform, attack=attack,
                                 adaptive=adaptive, clean=False, **common)
    return results


def result_line(r: Result) -> str:
    """One line per result: model, modality, attack and budget, threat, defense (heads or input
    defense), clean and attacked top-1 and R@1."""
    c, a = r.metrics["clean"], r.metrics.get("attacked")
    line = f"{r.model['name']} {r.modality} n={r.n}" + _attack_words(r) + _defense_words(r)
    line += f": clean top-1 {c.get('zeroshot_top1', float('nan')):.3f} t2x R@1 {c['t2x_R@1']:.3f}"
    if a:
        line += f" | attacked top-1 {a.get('zeroshot_top1', float('nan')):.3f} t2x R@1 {a['t2x_R@1']:.3f}"
    return line


def _attack_words(r: Result) -> str:
    """`` pgd eps=4/255 (adaptive, bpda+eot)``: the attack, its budget and the threat (with the
    adaptive attack's parts behind an input defense, named once)."""
    from ..modalities import get_modality

    if not r.attack:
        return ""
    words = f" {r.attack['name']}"
    if r.attack.get("eps") is not None:
        words += f" eps={get_modality(r.modality).format_eps(r.attack['eps'])}"
    parts = adaptive_label(r.attack, sep="+", empty="") if r.threat == "adaptive" and r.defense else ""
    return words + f" ({r.threat}" + (f", {parts}" if parts and parts != r.threat else "") + ")"


def _defense_words(r: Result) -> str:
    """`` behind jpeg`` or `` with heads (calibration ce)``: what the scored model had in front."""
    d = r.defense
    if not d:
        return ""
    if d.get("marks") is not None:
        return f" behind {d['name']}"
    detail = " ".join(str(d[k]) for k in ("name", "objective") if d.get(k))
    return f" with heads ({detail})" if detail else " with heads"


def write_eval(req: EvalRequest, results: list[Result]) -> str | None:
    """Write the results to ``req.out`` on rank 0: appended one record per line for a ``.jsonl``
    name (under a lock: earlier records and concurrent writers' records are kept), else one JSON
    document (the record, or a list of them for several budgets), so that every file written
    reads back with `robustmm report`; returns the path written, or None."""
    out = req.out_path()
    if not out or distributed.rank() != 0:  # multi-process: every rank holds the same results; rank 0 writes
        return None
    if out.endswith(".jsonl"):
        append_jsonl(out, results)
    elif len(results) == 1:
        write_json(out, results[0])
    else:
        atomic_write_text(out, json.dumps([checked_dict(r) for r in results], indent=2) + "\n")
    return out
