"""Mixed-precision attacks (`--amp`): bfloat16 autocast on the attacked path only; inputs, budget
projections and scores stay float32."""
import json

import torch

from robustmm.attacks import build_attack
from robustmm.attacks.amp import AutocastAttack
from robustmm.cli import main
from robustmm.encoders.base import Encoder
from robustmm.evaluation import iter_batches


class RecordingEncoder(Encoder):
    """Delegates to ``base`` and records, for every modality forward, whether autocast was on and
    the dtype the base encoder computed in."""

    def __init__(self, base: Encoder):
        super().__init__()
        self.base = base
        self.name, self.modalities, self.embed_dim = base.name, base.modalities, base.embed_dim
        self.calls: list[tuple[bool, torch.dtype]] = []

    def _encode(self, modality, x):
        z = self.base.encode(modality, x, validate=False)
        self.calls.append((torch.is_autocast_enabled(x.device.type), z.dtype))
        return z

    def encode_text(self, texts):
        return self.base.encode_text(texts)


def test_autocast_really_runs_on_the_attacked_path(rand_encoder, synth_small):
    batch = next(iter_batches(synth_small, "image", 4, None))
    rec = RecordingEncoder(rand_encoder)
    pgd = build_attack("pgd", eps=4 / 255, steps=2, loss="embedding", seed=1)
    pgd(rec, batch)
    assert rec.calls and not any(on for on, _ in rec.calls)  # the bare attack: float32, no autocast
    rec.calls.clear()
    adv = AutocastAttack(pgd)(rec, batch)
    assert rec.calls and all(on for on, _ in rec.calls), rec.calls  # every attack forward autocast
    assert all(dtype == torch.bfloat16 for _, dtype in rec.calls)  # and computed in bfloat16
    assert adv.x.dtype == torch.float32
    rec.calls.clear()
    with torch.no_grad():
        rec.encode("image", adv.x)  # outside the attack: no autocast
    assert rec.calls == [(False, torch.float32)]


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
