"""Mixed-precision attacks (`--amp`): bfloat16 autocast on the attacked path only; inputs, budget
projections and scores stay float32."""
import json

import torch

from robustmm.attacks import build_attack
from robustmm.attacks.amp import AutocastAttack
from robustmm.cli import main
from robustmm.evaluation import iter_batches


def test_autocast_attack_keeps_float32_budget_and_domain(rand_encoder, synth_small):
    batch = next(iter_batches(synth_small, "image", 8, None))
    attack = AutocastAttack(build_attack("pgd", eps=4 / 255, steps=3, loss="embedding", seed=1))
    adv = attack(rand_encoder, batch)
    assert adv.x.dtype == torch.float32
    assert (adv.x - batch.x).abs().max() <= 4 / 255 + 1e-6 and adv.x.min() >= 0 and adv.x.max() <= 1
    assert not torch.equal(adv.x, batch.x)
    assert attack.describe()["amp"] == "bfloat16"
    # copies made for curves and checks keep autocast
    assert isinstance(attack.with_eps(1 / 255), AutocastAttack) and isinstance(attack.replace(steps=1), AutocastAttack)
    assert attack.replace(steps=1).describe()["steps"] == 1
    before = {k: v.clone() for k, v in rand_encoder.state_dict().items()}
    attack(rand_encoder, batch)
    assert all(torch.equal(v, rand_encoder.state_dict()[k]) for k, v in before.items())


def test_eval_amp_records_it(tmp_path, rand_encoder):
    rand_encoder.save(tmp_path / "m")
    out = tmp_path / "r.json"
    assert main(["eval", "--model", f"tinybind:{tmp_path / 'm'}", "--modality", "audio", "--n", "8", "--attack", "pgd",
                 "--steps", "1", "--amp", "-q", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["attack"]["amp"] == "bfloat16" and d["metrics"]["attacked"] is not None
