"""Write the shipped benchmark protocol robustmm/protocols/mm-v1.json from SynthScenes (test split).

Run once per protocol version: `python benchmarks/make_protocol.py` (prints one JSON object with
the file's hash). A changed setting or item is a new protocol version, never an edit of mm-v1.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from robustmm.data.registry import load_dataset
from robustmm.evaluation.certification.defaults import reference_radii
from robustmm.job.bench_protocol import build_protocol
from robustmm.modalities import get_modality

N_ITEMS = 100
MODALITIES = ["image", "video", "audio", "depth", "thermal", "pointcloud"]
SETTINGS = {
    "description": "mm-v1: TinyBind-sized multimodal robustness benchmark on SynthScenes (test split), "
                   "100 items per modality, L-inf worst case of a nested PGD sweep, APGD-CE and APGD-T at "
                   "every eps of each modality's grid; randomized-smoothing defenses are also certified.",
    "seed": 0,
    "batch_size": 100,
    "ensemble": {"pgd_steps": 10, "attacks": ["apgd-ce", "apgd-t"], "steps": 10, "targets": 3, "eot_samples": 4,
                 "note": "each part runs only on the items every earlier candidate left robust (early stopping); "
                         "BPDA/EOT around every attack against non-differentiable or randomized input defenses"},
    "certification": {"enabled": True, "n_items": 50, "n0": 16, "draws": 100, "alpha": 0.001, "batch_size": 50,
                      "note": "Cohen et al. CERTIFY with the defense's sigma; only for smoothing defenses"},
    "headline": {"per_modality": "robust accuracy (zero-shot top-1 under the worst case) at the modality's headline_eps",
                 "overall": "mean of the per-modality headlines over every modality of the protocol",
                 "sort": "overall, descending"},
}


def main() -> None:
    data = load_dataset("synthscenes", split="test", n=N_ITEMS)
    eps = {m: [float(e) for e in get_modality(m).eps_grid] for m in MODALITIES}
    table = build_protocol(data, name="mm-v1", version="1.0", modalities=MODALITIES, settings=SETTINGS, eps=eps,
                           headline_eps={m: float(get_modality(m).middle_eps) for m in MODALITIES},
                           radii={m: list(reference_radii(m)) for m in MODALITIES}, n=N_ITEMS)
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "robustmm/protocols/mm-v1.json"
    text = json.dumps(table, indent=1) + "\n"
    out.write_text(text, encoding="utf-8")
    print(json.dumps({"protocol": str(out), "sha256": hashlib.sha256(text.encode()).hexdigest(), "items": N_ITEMS}))


if __name__ == "__main__":
    main()
