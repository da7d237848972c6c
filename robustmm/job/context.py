"""What the cells of one job share: the typed config, lazily loaded encoders and datasets, and
the state one cell leaves for another (the fitted patch for the example figures, the calibration
heads for the calibrated checks)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.registry import load_dataset
from ..encoders.registry import load_encoder
from .config import JobConfig

#: what the runner (not a cell) writes in the output folder
_NOT_CELLS = ("results.jsonl", "summary.csv", "report.md", "report.html", "report.tex", "plots")


class JobContext:
    """Loads each model and each (split, n) subset once, on first use, for every cell of a job."""

    def __init__(self, config: JobConfig, *, quick: bool = False, device: str = "cpu", progress: bool = True,
                 out_dir: str | Path | None = None):
        self.config, self.quick, self.device, self.progress = config, quick, device, progress
        run = config.run
        self.amp = run.amp
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.n: int = run.pick("n", quick)
        attack_n = run.pick("attack_n", quick)
        self.attack_n: int = min(self.n, self.n if attack_n is None else attack_n)
        self.seed, self.batch_size = run.seed, run.batch_size
        self.model_name: str = run.model
        self.modalities: list[str] = list(run.modalities)
        self._encoders: dict[str, Any] = {}
        self._datasets: dict[tuple[str, int], Any] = {}
        self.fitted_patch: Any = None  # the patch cell's attack, for the example gallery
        self.calibrations: dict[tuple[str, str], Any] = {}  # (modality, objective) -> Calibration

    def section(self, name: str) -> Any:
        """The typed config section ``name``."""
        return self.config.section(name)

    def pick(self, section: str, key: str) -> Any:
        """``quick_KEY`` of ``[section]`` under --quick when it is set, else ``KEY``."""
        return self.section(section).pick(key, self.quick)

    def enabled(self, name: str) -> bool:
        """Whether section ``name`` is switched on."""
        return bool(getattr(self.section(name), "enabled", True))

    def encoder(self, name: str | None = None) -> Any:
        """The encoder ``name`` (default: the job's model), loaded once."""
        name = name or self.model_name
        if name not in self._encoders:
            self._encoders[name] = load_encoder(name, device=self.device)
        return self._encoders[name]

    def dataset(self, split: str | None = None, n: int | None = None) -> Any:
        """The first ``n`` items (default: the clean size) of ``split`` (default: ``[run] split``), loaded once."""
        run = self.config.run
        split = split or run.split
        n = n or self.n
        if (split, n) not in self._datasets:
            self._datasets[(split, n)] = load_dataset(run.dataset, split=split, n=n, root=run.root)
        return self._datasets[(split, n)]

    @property
    def test(self) -> Any:
        """The items of the clean evaluation."""
        return self.dataset(n=self.n)

    @property
    def attacked(self) -> Any:
        """The items attacked (curves, patch, calibration scores)."""
        return self.dataset(n=self.attack_n)

    def attacked_for(self, section: str) -> Any:
        """The attacked items, or fewer when the section sets its own ``n`` (costly text attacks)."""
        n = self.pick(section, "n")
        return self.dataset(n=min(int(n), self.attack_n)) if n else self.attacked

    def kw(self) -> dict[str, Any]:
        """The keywords every evaluate/curve call of the job shares."""
        return {"batch_size": self.batch_size, "seed": self.seed, "progress": self.progress}

    def amp_wrap(self, attack: Any) -> Any:
        """The attack under bfloat16 autocast when ``[run] amp`` (or ``run --amp``) is on."""
        if not self.amp:
            return attack
        from ..attacks.amp import AutocastAttack

        return AutocastAttack(attack)

    def pgd(self, **kw: Any) -> Any:
        """The job's PGD (``[pgd] steps``, ``[run] seed`` for its random start) with ``kw`` (eps,
        loss ...), under amp when on."""
        from ..attacks import build_attack

        return self.amp_wrap(build_attack("pgd", steps=int(self.pick("pgd", "steps")), **({"seed": self.seed} | kw)))

    def key(self, modality: str, what: str) -> str:
        """A cell key, ``MODEL|MODALITY|WHAT`` (stable across versions: --resume relies on it)."""
        return f"{self.model_name}|{modality}|{what}"

    def state(self) -> dict[str, Any]:
        """What cells leave for later cells and the report: the calibrations and the fitted patch."""
        return {"calibrations": dict(self.calibrations), "fitted_patch": self.fitted_patch}

    def state_since(self, before: dict[str, Any]) -> dict[str, Any]:
        """The part of :meth:`state` a cell made since ``before`` (what another rank must adopt)."""
        old = before["calibrations"]
        return {"calibrations": {k: v for k, v in self.calibrations.items() if old.get(k) is not v},
                "fitted_patch": None if self.fitted_patch is before["fitted_patch"] else self.fitted_patch}

    def adopt(self, state: dict[str, Any]) -> None:
        """Take over state another rank's cells made (multi-process `robustmm run`)."""
        self.calibrations.update(state["calibrations"])
        if state["fitted_patch"] is not None:
            self.fitted_patch = state["fitted_patch"]

    def files(self) -> dict[str, tuple[int, int]]:
        """What the cells have written under the output folder: relative path -> (size, mtime_ns).

        results.jsonl, the report's files and dotfiles (locks, temporaries) are not the cells' own."""
        if self.out_dir is None or not self.out_dir.is_dir():
            return {}
        out = {}
        for p in self.out_dir.rglob("*"):
            rel = p.relative_to(self.out_dir)
            if p.is_file() and not any(part.startswith(".") for part in rel.parts) and rel.parts[0] not in _NOT_CELLS:
                st = p.stat()
                out[rel.as_posix()] = (st.st_size, st.st_mtime_ns)
        return out

    def files_since(self, before: dict[str, tuple[int, int]]) -> dict[str, bytes]:
        """The bytes of every file a cell wrote (new or changed) since the snapshot ``before``."""
        assert self.out_dir is not None or not before
        return {rel: (self.out_dir / rel).read_bytes() for rel, stamp in self.files().items()  # type: ignore[operator]
                if before.get(rel) != stamp}

    def write_files(self, files: dict[str, bytes]) -> None:
        """Write files another rank's cells wrote (``files_since``) at the same place here, atomically."""
        from ..persist import atomic_write_bytes

        for rel, data in sorted(files.items()):
            if self.out_dir is not None:
                (self.out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(self.out_dir / rel, data)

    def heads_path(self, modality: str, objective: str) -> Path:
        """Where the run keeps the heads of one calibration cell (``DIR/heads/MODEL-MODALITY-OBJ``)."""
        assert self.out_dir is not None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in objective)
        return self.out_dir / "heads" / f"{self.model_name.replace('/', '_')}-{modality}-{safe}.safetensors"
