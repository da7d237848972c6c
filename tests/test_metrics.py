"""Metrics on hand-made embeddings with known answers."""
import torch

from robustmm.metrics import attack_success_rate, caption_owner, retrieval_metrics, t2x_ranks, x2t_ranks, zeroshot_metrics


def unit(*rows):
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_zeroshot_top1_and_top5():
    cls = torch.eye(6)
    emb = unit([1, 0.5, 0, 0, 0, 0], [0, 1, 0.1, 0, 0, 0], [0.2, 0, 0, 0, 0, 1])
    labels = torch.tensor([0, 2, 0])  # items 1 and 2: the true class is 2nd best
    m = zeroshot_metrics(emb, cls, labels)
    assert abs(m["zeroshot_top1"] - 1 / 3) < 1e-6
    assert abs(m["zeroshot_top5"] - 1.0) < 1e-6  # every label within the top-5 of 6 classes


def test_caption_owner_flattens():
    texts, owner = caption_owner([["a", "b"], ["c"]])
    assert texts == ["a", "b", "c"] and owner.tolist() == [0, 0, 1]


def test_retrieval_any_caption_counts_for_x2t():
    items = unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    # item 0 has a bad caption and a perfect caption; item 1's caption points to item 2; item 2 perfect
    texts = unit([0, 0.9, 0.1], [1, 0, 0], [0, 0, 1], [0, 0, 1])
    owner = torch.tensor([0, 0, 1, 2])
    x2t = x2t_ranks(items, texts, owner)
    # item 1's own caption (idx 2) has similarity 0: behind caption 0, tied with 1 and 3 -> rank 4;
    # item 2's own caption ties with caption 2 (similarity 1) -> rank 2 (ties count against)
    assert x2t.tolist() == [1, 4, 2]
    t2x = t2x_ranks(items, texts, owner)
    # caption 0 prefers items 1 and 2 over its own item 0 (rank 3); caption 2 = [0,0,1] likewise
    assert t2x.tolist() == [3, 1, 3, 1]
    m = retrieval_metrics(items, texts, owner)
    assert abs(m["x2t_R@1"] - 1 / 3) < 1e-6 and abs(m["t2x_R@1"] - 0.5) < 1e-6
    assert abs(m["t2x_MRR"] - (1 / 3 + 1 + 1 / 3 + 1) / 4) < 1e-6
    assert abs(m["x2t_MRR"] - (1 + 1 / 4 + 1 / 2) / 3) < 1e-6


def test_recall_at_5_and_10_with_ranks_beyond_5():
    """7 items, one caption each, every rank from 1 to 7 occurring in both directions.

    Caption c belongs to item 2c mod 7; its similarity to item j is w[(j - c) mod 7] with w
    strictly decreasing, so caption c ranks its own item (offset c) at c + 1, and item j ranks its
    own caption (c = 4j mod 7, offset 4j mod 7) at 4j mod 7 + 1: no ties anywhere.
    """
    n = 7
    w = torch.linspace(1.0, 0.1, n)
    items = torch.eye(n)
    texts = torch.stack([torch.roll(w, c) for c in range(n)])  # texts[c, j] = w[(j - c) mod n]
    owner = torch.tensor([2 * c % n for c in range(n)])
    t2x, x2t = t2x_ranks(items, texts, owner), x2t_ranks(items, texts, owner)
    assert t2x.tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert x2t.tolist() == [4 * j % n + 1 for j in range(n)] == [1, 5, 2, 6, 3, 7, 4]
    m = retrieval_metrics(items, texts, owner)
    mrr = sum(1 / r for r in range(1, n + 1)) / n
    for d in ("t2x", "x2t"):
        assert abs(m[f"{d}_R@1"] - 1 / 7) < 1e-6
        assert abs(m[f"{d}_R@5"] - 5 / 7) < 1e-6  # ranks 6 and 7 miss the top 5
        assert m[f"{d}_R@10"] == 1.0
        assert abs(m[f"{d}_MRR"] - mrr) < 1e-6


def test_ties_count_against_the_query():
    items = unit([1, 0], [1, 0])
    texts = unit([1, 0], [1, 0])
    owner = torch.tensor([0, 1])
    assert t2x_ranks(items, texts, owner).tolist() == [2, 2]
    assert x2t_ranks(items, texts, owner).tolist() == [2, 2]
    collapsed = zeroshot_metrics(unit([1, 1], [1, 1]), torch.eye(2), torch.tensor([0, 1]))
    assert collapsed["zeroshot_top1"] == 0.0


def test_attack_success_rate():
    clean = torch.tensor([True, True, False, True])
    adv = torch.tensor([False, True, True, False])
    assert attack_success_rate(clean, adv) == 2 / 3
    assert attack_success_rate(torch.zeros(3, dtype=torch.bool), adv[:3]) is None
