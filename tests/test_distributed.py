"""Multi-process evaluation: ``torchrun -m robustmm eval`` over 2 CPU ranks (gloo, loopback only)
gives exactly the metrics of a single-process run, clean and under PGD, with uneven shards."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustmm import distributed
from robustmm.distributed import shard


@pytest.mark.parametrize("n, align, world", [(21, 4, 2), (21, 1, 2), (5, 4, 3), (0, 8, 2), (1000, 128, 7), (3, 128, 2)])
def test_shards_tile_the_items_in_whole_batches(n, align, world):
    parts = [shard(n, align=align, rank_=r, world=world) for r in range(world)]
    assert [i for p in parts for i in p] == list(range(n))
    assert all(p.start % align == 0 for p in parts if len(p))
    blocks = [(len(p) + align - 1) // align for p in parts]
    assert max(blocks) - min(blocks) <= 1  # as even as whole batches allow


def test_helpers_are_noops_outside_a_process_group():
    assert not distributed.is_distributed() and distributed.rank() == 0 and distributed.world_size() == 1
    assert shard(10, align=4) == range(10)
    t = torch.arange(6.0).reshape(3, 2)
    assert distributed.all_gather_tensor(t) is t
    assert distributed.all_gather_object({"a": 1}) == [{"a": 1}]
    assert distributed.broadcast_object([1]) == [1]
    with distributed.local_only():
        assert distributed.world_size() == 1 and distributed.group_size() == 1


def test_waves_end_after_the_kinds_whose_state_later_kinds_read():
    from robustmm.job.parallel import waves
    from robustmm.job.registry import Cell

    plan = [(k, Cell(f"{k}{i}", list)) for i, k in enumerate(["clean", "pgd", "calibration", "calibration", "checks",
                                                               "checks"])]
    assert [[c.key for c in w] for w in waves(plan)] == [["clean0", "pgd1", "calibration2", "calibration3"],
                                                         ["checks4", "checks5"]]
    assert [len(w) for w in waves(plan[:4])] == [4]  # nothing after the calibration: one wave
    assert waves([]) == []


def test_consecutive_cells_of_one_group_are_handed_out_together():
    from robustmm.job.parallel import cell_units
    from robustmm.job.registry import Cell

    groups = [None, "sga", "sga", "sga", None, "cal", None, "cal", "cal"]
    wave = [Cell(f"c{i}", list, g) for i, g in enumerate(groups)]
    assert cell_units(wave) == [[0], [1, 2, 3], [4], [5], [6], [7, 8]]  # only consecutive members join
    assert cell_units([Cell("a", list), Cell("b", list)]) == [[0], [1]]  # no group: one cell each


class _Ctx:
    """What share_texts reads of a JobContext: the encoder, the test items and the job's modalities."""

    def __init__(self, encoder, data, modalities=("image", "audio")):
        self._encoder, self.test, self.modalities = encoder, data, list(modalities)

    def encoder(self):
        return self._encoder


@pytest.mark.determinism
def test_share_texts_fills_the_memo_and_fails_on_every_rank(monkeypatch, rand_encoder, synth_small, test_batch_size):
    from robustmm.encoders.base import NUMERIC_TOLERANCE
    from robustmm.encoders.tinybind import TinyBind
    from robustmm.errors import RobustMMError
    from robustmm.job import parallel

    data = synth_small.head(6)
    tower = type(rand_encoder.text_tower)

    def fresh():  # a TinyBind with an empty memo
        return TinyBind(rand_encoder.config, text_tower=tower(batch_size=test_batch_size))

    enc = fresh()
    texts = [c for caps in data.captions for c in caps]
    assert enc.text_memo().missing(texts) == list(dict.fromkeys(texts))
    parallel.share_texts(_Ctx(enc, data))  # one process: every chunk is this rank's
    assert enc.text_memo().missing(texts) == []
    one = enc.encode_text(texts)
    prompts = [p for m in ("image", "audio") for ps in data.tasks[m].prompts() for p in ps]
    assert enc.text_memo().missing(prompts) == [] and enc.text_memo().missing(data.tasks["depth"].prompts()[0])
    chunks = enc.text_memo().chunks(texts + prompts)
    want = {t: e for c in chunks for t, e in zip(c, enc.text_memo().embed(c))}
    assert torch.equal(one, torch.stack([want[t] for t in texts]))  # the canonical chunks' bits
    torch.testing.assert_close(one[:5], tower()(texts[:5]), **NUMERIC_TOLERANCE)  # other batch mates: close

    # two ranks, one after the other: each embeds every other chunk, both memoise all of them
    monkeypatch.setattr(parallel.dist, "world_size", lambda: 2)
    ranks, sent = [fresh(), fresh()], {}

    def gather(obj, me):  # rank 1 goes first and sees its own share twice; rank 0 sees both
        sent[me] = obj
        return [sent.get(0, obj), sent.get(1, obj)]

    for r in (1, 0):
        monkeypatch.setattr(parallel.dist, "rank", lambda r=r: r)
        monkeypatch.setattr(parallel.dist, "all_gather_object", lambda obj, r=r: gather(obj, r))
        parallel.share_texts(_Ctx(ranks[r], data))
    assert [c for c, _ in sent[1]] == chunks[1::2]  # rank 1 embedded only its share
    assert torch.equal(ranks[0].encode_text(texts), one)  # pooled over 2 ranks = one process, bit for bit
    monkeypatch.undo()

    class Broken:
        def text_memo(self):
            raise ValueError("no text tower here")

    with pytest.raises(ValueError, match="no text tower"):  # this rank's own error, after the gather
        parallel.share_texts(_Ctx(Broken(), data))
    enc2 = TinyBind(rand_encoder.config, text_tower=type(rand_encoder.text_tower)())
    monkeypatch.setattr(parallel.dist, "all_gather_object", lambda obj: [obj, "OSError: disk full"])
    with pytest.raises(RobustMMError, match="rank 1 failed before the first cell: OSError: disk full"):
        parallel.share_texts(_Ctx(enc2, data))  # another rank's error: named on this rank too


def test_items_mode_compares_results_without_timings():
    from robustmm.job.parallel import _untimed

    assert _untimed({"timing_s": 1.0, "a": [{"train_s": 2, "b": 3}], "defense": {"attack_s": 1, "epochs": 2}}) == \
        {"a": [{"b": 3}], "defense": {"epochs": 2}}


def test_shard_mode_is_checked(monkeypatch):
    from robustmm.errors import RobustMMError
    from robustmm.job.parallel import shard_mode

    assert shard_mode() in ("cells", "items")
    monkeypatch.setenv("ROBUSTMM_RUN_SHARD", "items")
    assert shard_mode() == "items"
    monkeypatch.setenv("ROBUSTMM_RUN_SHARD", "batches")
    with pytest.raises(RobustMMError, match="cells, items"):
        shard_mode()


def test_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("ROBUSTMM_DIST_TIMEOUT", "90")
    assert distributed.timeout_s() == 90
    monkeypatch.setenv("ROBUSTMM_DIST_TIMEOUT", "soon")
    assert distributed.timeout_s() == distributed.DEFAULT_TIMEOUT_S


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random-init quarter-width TinyBind saved to disk (``tinybind:PATH``)."""
    from robustmm.encoders.tinybind import TinyBind
    from robustmm.encoders.towers import default_tower_config

    torch.manual_seed(0)
    stem = tmp_path_factory.mktemp("dist") / "m"
    TinyBind({"name": "x", "towers": default_tower_config(0.25)}).save(stem)
    return stem


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # same thread count in every process (results must be bit-identical), loopback-only gloo
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", HF_HUB_OFFLINE="1",
               MASTER_ADDR="127.0.0.1", TOKENIZERS_PARALLELISM="false")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _single_then_two_ranks(args: list[str], single: Path, multi: Path, verbosity: str) -> subprocess.CompletedProcess:
    """``robustmm ARGS`` in one process (``-q``, into ``single``), then on 2 CPU ranks under torchrun
    (``verbosity``, into ``multi``); both must succeed. Returns the torchrun process (its output)."""
    p = subprocess.run([sys.executable, "-m", "robustmm", *args, "-q", "--out", str(single)],
                       env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                        "-m", "--", "robustmm", *args, verbosity, "--out", str(multi)],
                       env=_env(), capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


@pytest.mark.parametrize("attack", [[], ["--attack", "pgd", "--steps", "2"]], ids=["clean", "pgd"])
def test_torchrun_eval_matches_single_process(tmp_path, tiny_model, attack):
    # 21 items in batches of 4: 6 batches -> ranks get 12 and 9 items (uneven shards, several batches each)
    args = ["eval", "--model", f"tinybind:{tiny_model}", "--data", "synthscenes", "--n", "21", "--modality", "image",
            "--batch-size", "4", *attack]
    single, multi = tmp_path / "single.json", tmp_path / "multi.json"
    p = _single_then_two_ranks(args, single, multi, "-v")
    assert "rank 1 of 2 (gloo, timeout" in p.stderr  # really two ranks, with a collective timeout
    assert p.stdout.count("n=21") == 1 and p.stdout.count("wrote") == 1  # only rank 0 prints and writes
    a, b = json.loads(single.read_text()), json.loads(multi.read_text())
    assert a["n"] == b["n"] == 21
    assert a["metrics"] == b["metrics"]  # exact: clean, attacked, delta, asr
    assert (b["metrics"]["attacked"] is None) == (not attack)
    assert a["attack"] == b["attack"]
    assert a["cost"] == b["cost"] and (a["cost"] is None) == (not attack)  # each rank's passes, summed


def test_torchrun_nested_curve_matches_single_process(tmp_path, tiny_model):
    # a nested curve: the still-robust items of every budget are sharded in whole batches
    args = ["eval", "--model", f"tinybind:{tiny_model}", "--data", "synthscenes", "--n", "21", "--modality", "audio",
            "--batch-size", "4", "--attack", "pgd", "--steps", "2", "--eps", "0.001", "0.004", "0.016"]
    single, multi = tmp_path / "single.jsonl", tmp_path / "multi.jsonl"
    _single_then_two_ranks(args, single, multi, "-q")
    a = [json.loads(line) for line in single.read_text().splitlines()]
    b = [json.loads(line) for line in multi.read_text().splitlines()]
    assert len(a) == len(b) == 3
    assert [r["metrics"] for r in a] == [r["metrics"] for r in b]
    assert [r["extra"]["n_attacked"] for r in a] == [r["extra"]["n_attacked"] for r in b]
    assert [r["cost"] for r in a] == [r["cost"] for r in b]  # per budget, summed over the ranks
