#!/usr/bin/env bash
# GPU check for a lent CUDA machine: robustmm PGD vs torchattacks PGD on a random-init open_clip
# ViT-B-32 (no weights to download), on cuda, bfloat16 autocast and float32, printed as ONE JSON
# object on stdout ({"amp": {...}, "fp32": {...}}; each is pgd_vs_torchattacks.py's JSON). Progress
# and logs go to stderr. Takes a couple of minutes at most (most of it imports and model builds).
#
#   bash benchmarks/gpu_check.sh                  # on the GPU machine, from anywhere
#   bash benchmarks/gpu_check.sh --fetch-wheels   # HERE (with network), before: fills .whl/
#
# Python: $PYTHON, else python3. robustmm is imported from this checkout (PYTHONPATH), or installed
# with `pip install -e . --no-deps --no-build-isolation` (offline-safe) when ROBUSTMM_PIP_INSTALL=1.
# Packages the GPU image lacks (open_clip_torch, torchattacks, ftfy, wcwidth) are installed from
# wheels in .whl/ if present: fetch them here with --fetch-wheels and carry .whl to the machine.
# Environment: N (images, default 512), BATCH (default 128), STEPS (default 10), REPEATS (default 3);
# MODEL and DEVICE override the model and device (a plumbing check without a GPU:
#   MODEL=tinybind DEVICE=cpu N=8 BATCH=4 STEPS=1 REPEATS=1 bash benchmarks/gpu_check.sh).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-python3}"
WHEELS=(open_clip_torch==3.3.0 torchattacks==3.5.1 ftfy==6.3.1 wcwidth==0.9.4)

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    mkdir -p .whl
    grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.whl/' >> .git/info/exclude; }
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}" >&2
    ls -l .whl >&2
    exit 0
fi

if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/robustmm-site .whl/*.whl >&2
    export PYTHONPATH="/tmp/robustmm-site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [[ "${ROBUSTMM_PIP_INSTALL:-0}" == "1" ]] && ! "$PY" -c "import robustmm" 2>/dev/null; then
    "$PY" -m pip install -q -e . --no-deps --no-build-isolation >&2
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

DEVICE="${DEVICE:-cuda}"
"$PY" - "$DEVICE" >&2 <<'EOF'
import importlib.util, sys
missing = [m for m in ("torch", "open_clip", "torchattacks", "robustmm") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: missing {missing}; run `bash benchmarks/gpu_check.sh --fetch-wheels` where pip has "
             "network and carry .whl/ to this machine")
import torch
if sys.argv[1].startswith("cuda"):
    if not torch.cuda.is_available():
        sys.exit("gpu_check: torch sees no CUDA device")
    print(f"gpu_check: torch {torch.__version__} on {torch.cuda.get_device_name(0)}", file=sys.stderr)
EOF

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
COMMON=(--model "${MODEL:-open_clip:ViT-B-32@none}" --modality image --device "$DEVICE" --n "${N:-512}" --batch-size "${BATCH:-128}"
        --steps "${STEPS:-10}" --repeats "${REPEATS:-3}" -v)
timeout 600 "$PY" benchmarks/pgd_vs_torchattacks.py "${COMMON[@]}" --amp > "$TMP/amp.json"
timeout 600 "$PY" benchmarks/pgd_vs_torchattacks.py "${COMMON[@]}" > "$TMP/fp32.json"
"$PY" - "$TMP/amp.json" "$TMP/fp32.json" <<'EOF'
import json, sys
amp, fp32 = (json.load(open(p)) for p in sys.argv[1:3])
summary = {
    "images_per_s": {"robustmm_amp": amp["robustmm"]["items_per_s"], "torchattacks_amp": amp["torchattacks"]["items_per_s"],
                     "robustmm_fp32": fp32["robustmm"]["items_per_s"], "torchattacks_fp32": fp32["torchattacks"]["items_per_s"]},
    "time_ratio": {"amp": amp["time_ratio"], "fp32": fp32["time_ratio"]},
    "overhead_vs_raw": {"amp": amp["overhead_vs_raw"], "fp32": fp32["overhead_vs_raw"]},
    "amp_speedup_robustmm": round(fp32["robustmm"]["median_s"] / amp["robustmm"]["median_s"], 3),
}
print(json.dumps({"benchmark": "gpu_check", "summary": summary, "amp": amp, "fp32": fp32}))
EOF
