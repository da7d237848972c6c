#!/usr/bin/env bash
# GPU check for a lent CUDA machine, printed as ONE JSON object on stdout (progress and logs on
# stderr); every step has its own 600 s timeout and a failed step is reported in the JSON, not fatal:
#   amp, fp32        robustmm PGD vs torchattacks PGD on a random-init open_clip ViT-B-32 (no weights
#                    to download), bfloat16 autocast and float32 (pgd_vs_torchattacks.py's JSON);
#   distributed_run  `robustmm run --quick` on 1 GPU vs NPROC GPUs (torchrun, nccl, rank i on cuda:i):
#                    speed-up, results/heads/report compared byte for byte (distributed_run.py's JSON);
#   ensemble         native APGD/APGD-T/Square vs torchattacks and the worst-case ensemble's cost
#                    (apgd_vs_torchattacks.py), and `robustmm eval --attack ensemble` on 1 vs NPROC
#                    ranks (wall times; whether the metrics are identical).
# Takes a few minutes (most of it imports, model builds and the quick job).
#
#   bash benchmarks/gpu_check.sh                  # on the GPU machine, from anywhere
#   bash benchmarks/gpu_check.sh --fetch-wheels   # HERE (with network), before: fills .whl/
#
# Python: $PYTHON, else python3. robustmm is imported from this checkout (PYTHONPATH), or installed
# with `pip install -e . --no-deps --no-build-isolation` (offline-safe) when ROBUSTMM_PIP_INSTALL=1.
# Packages the GPU image lacks (open_clip_torch, torchattacks, ftfy, wcwidth) are installed from
# wheels in .whl/ if present: fetch them here with --fetch-wheels and carry .whl to the machine.
# Environment: N (images, default 512), BATCH (default 128), STEPS (default 10), REPEATS (default 3);
# MODEL and DEVICE override the model and device; NPROC the ranks of the distributed steps (default
# every GPU, 2 on CPU); DIST_JOB a job TOML for distributed_run (default: the shipped job on a GPU,
# distributed_run.py's --tiny job on CPU); ENSEMBLE_MODEL the ensemble's model (default tinybind).
# A plumbing check without a GPU (gloo instead of nccl; a few minutes on 2 shared cores):
#   MODEL=tinybind DEVICE=cpu N=8 BATCH=4 STEPS=1 REPEATS=1 bash benchmarks/gpu_check.sh
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
DIST_DEVICE="${DEVICE%%:*}"  # torchrun ranks take cuda:LOCAL_RANK themselves
NPROC="${NPROC:-$("$PY" -c 'import sys, torch; print(max(torch.cuda.device_count(), 1) if sys.argv[1] == "cuda" else 2)' "$DIST_DEVICE")}"
port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# step NAME CMD...: stdout to $TMP/NAME.json, exit status to $TMP/NAME.rc, wall seconds to $TMP/NAME.s
step() {
    local name="$1"; shift
    local t0 rc
    t0="$(date +%s%N)"
    set +e
    timeout 600 "$@" > "$TMP/$name.json"
    rc=$?
    set -e
    echo "$rc" > "$TMP/$name.rc"
    echo $(( ($(date +%s%N) - t0) / 1000000 )) > "$TMP/$name.ms"
    echo "gpu_check: $name exit $rc after $(( $(cat "$TMP/$name.ms") / 1000 ))s" >&2
}
COMMON=(--model "${MODEL:-open_clip:ViT-B-32@none}" --modality image --device "$DEVICE" --n "${N:-512}" --batch-size "${BATCH:-128}"
        --steps "${STEPS:-10}" --repeats "${REPEATS:-3}" -v)
step amp "$PY" benchmarks/pgd_vs_torchattacks.py "${COMMON[@]}" --amp
step fp32 "$PY" benchmarks/pgd_vs_torchattacks.py "${COMMON[@]}"

# the main job on 1 vs NPROC ranks (gloo on CPU, nccl on CUDA), outputs compared byte for byte
if [[ -n "${DIST_JOB:-}" ]]; then DIST_ARGS=(--config "$DIST_JOB")
elif [[ "$DIST_DEVICE" == cuda ]]; then DIST_ARGS=()
else DIST_ARGS=(--tiny); fi
step distributed_run "$PY" benchmarks/distributed_run.py --device "$DIST_DEVICE" --nproc "$NPROC" "${DIST_ARGS[@]}"

# the worst-case ensemble: its cost vs APGD-CE and torchattacks, then `robustmm eval` on 1 vs NPROC ranks
ENS_MODEL="${ENSEMBLE_MODEL:-tinybind}"
SIZE=(--n "${N:-512}" --batch-size "${BATCH:-128}" --steps "${STEPS:-10}")
step ensemble_cost "$PY" benchmarks/apgd_vs_torchattacks.py --model "$ENS_MODEL" "${SIZE[@]}" --device "$DEVICE" -v
EVAL=(eval --model "$ENS_MODEL" --modality image --attack ensemble "${SIZE[@]}" -q)
step ensemble_1 "$PY" -m robustmm "${EVAL[@]}" --device "$DEVICE" --out "$TMP/ens1.out.json"
step ensemble_n "$PY" -m torch.distributed.run --nnodes 1 --nproc_per_node "$NPROC" --master_addr 127.0.0.1 \
    --master_port "$(port)" -m -- robustmm "${EVAL[@]}" --device "$DIST_DEVICE" --out "$TMP/ensN.out.json"

"$PY" - "$TMP" "$NPROC" <<'PYEOF'
import json, pathlib, sys
tmp, nproc = pathlib.Path(sys.argv[1]), int(sys.argv[2])


def step(name):
    rc = int((tmp / f"{name}.rc").read_text().strip() or 1)
    text = (tmp / f"{name}.json").read_text().strip()
    try:
        out = json.loads(text) if text else {}
    except ValueError:
        out = {"stdout_tail": text[-500:]}
    return out if rc == 0 else {"error": f"exit {rc}", **(out if isinstance(out, dict) else {})}


def seconds(name):
    return round(int((tmp / f"{name}.ms").read_text()) / 1000, 2)


amp, fp32, dist = step("amp"), step("fp32"), step("distributed_run")
summary = {}
if "error" not in amp and "error" not in fp32:
    summary = {
        "images_per_s": {"robustmm_amp": amp["robustmm"]["items_per_s"], "torchattacks_amp": amp["torchattacks"]["items_per_s"],
                         "robustmm_fp32": fp32["robustmm"]["items_per_s"], "torchattacks_fp32": fp32["torchattacks"]["items_per_s"]},
        "time_ratio": {"amp": amp["time_ratio"], "fp32": fp32["time_ratio"]},
        "overhead_vs_raw": {"amp": amp["overhead_vs_raw"], "fp32": fp32["overhead_vs_raw"]},
        "amp_speedup_robustmm": round(fp32["robustmm"]["median_s"] / amp["robustmm"]["median_s"], 3),
    }
summary["distributed_run"] = {k: dist.get(k) for k in ("nproc", "speedup", "metrics_identical", "heads_identical",
                                                       "report_identical", "error")}
ens = {"cost": step("ensemble_cost"), "eval_1": step("ensemble_1"), "eval_n": step("ensemble_n")}
metrics = []
for name in ("ens1", "ensN"):
    try:
        metrics.append(json.loads((tmp / f"{name}.out.json").read_text())["metrics"])
    except (OSError, ValueError, KeyError, TypeError):
        metrics.append(None)
ens["eval_wall_s"] = {"1": seconds("ensemble_1"), str(nproc): seconds("ensemble_n")}
ens["eval_metrics_identical"] = None if None in metrics else metrics[0] == metrics[1]
ens["eval_metrics"] = metrics[0]
summary["ensemble"] = {"cost_ratio": (ens["cost"].get("ensemble") or {}).get("cost_ratio"), "eval_wall_s": ens["eval_wall_s"],
                       "eval_metrics_identical": ens["eval_metrics_identical"]}
print(json.dumps({"benchmark": "gpu_check", "nproc": nproc, "summary": summary, "amp": amp, "fp32": fp32,
                  "distributed_run": dist, "ensemble": ens}))
PYEOF
