"""Tiny offline stand-ins for real data and real models, shared by several test files.

* dataset files in the real on-disk formats (torchvision CIFAR pickles, Karpathy-split JSON plus
  an image folder): :func:`write_cifar10`, :func:`write_cifar100`, :func:`write_coco`,
  :func:`write_flickr30k`; each takes an empty folder and returns what the loader's ``root=`` needs;
* tiny random-init CLIP models for the open_clip and Hugging Face adapters, built in memory or
  saved where the registry's loaders look: :func:`tiny_open_clip_arch`, :func:`tiny_hf_clip`,
  :func:`save_hf_clip`, :func:`save_tiny_hf_clip`; the character-level CLIP tokenizer they and the
  tiny Bind checkpoints (tests/_bind_tiny.py) use: :func:`char_tokenizer`.

Nothing here downloads anything.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_FINE = ["apple", "aquarium_fish", "maple_tree"]


# -- CIFAR (the torchvision on-disk format) -----------------------------------------------------
def dump_pickle(path: Path, obj: Any, protocol: int = 2) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def cifar_images(n: int, seed: int) -> np.ndarray:
    """(n, 3072) uint8 records, as in the CIFAR batches."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, n: int = 12, seed: int = 0, train: bool = False) -> np.ndarray:
    """``root/cifar-10-batches-py/{test_batch,batches.meta}`` with ``n`` items (labels i % 10) and, with
    ``train``, the five ``data_batch_*`` files of ``n`` items each too (their pixels drawn after the test
    pixels, from the same ``seed``); returns the test pixels."""
    d = Path(root) / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    labels = [i % 10 for i in range(n)]
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    dump_pickle(d / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": labels,
                                   b"data": data, b"filenames": [b"x.png"] * n})
    for i in range(1, 6) if train else ():
        dump_pickle(d / f"data_batch_{i}", {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), b"labels": labels})
    dump_pickle(d / "batches.meta", {b"label_names": [s.encode() for s in CIFAR10_NAMES], b"num_vis": 3072})
    return data


def write_cifar100(root: Path) -> np.ndarray:
    """``root/cifar-100-python/{test,meta}``: 6 items over 3 fine classes, pickle protocol 5."""
    d = Path(root) / "cifar-100-python"
    d.mkdir(parents=True)
    data = cifar_images(6, 1)
    dump_pickle(d / "test", {b"fine_labels": [0, 1, 2, 2, 1, 0], b"coarse_labels": [0] * 6, b"data": data}, protocol=5)
    dump_pickle(d / "meta", {b"fine_label_names": [s.encode() for s in CIFAR100_FINE],
                             b"coarse_label_names": [b"fruit"]}, protocol=5)
    return data


# -- Karpathy-split JSON + images --------------------------------------------------------------
def write_image(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def write_coco(root: Path) -> Path:
    """``root/dataset_coco.json`` + ``root/images/val2014/``: 4 images (test, test, val, restval), 5 captions each;
    JPEG and PNG alternate, of different sizes and solid colours (red, green, blue, yellow)."""
    root = Path(root)
    images = []
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    for i, (split, color) in enumerate(zip(["test", "test", "val", "restval"], colors)):
        name = f"COCO_val2014_{i:012d}.jpg" if i % 2 == 0 else f"COCO_val2014_{i:012d}.png"
        write_image(root / "images" / "val2014" / name, (40 + 10 * i, 30), color)
        images.append({"filepath": "val2014", "filename": name, "split": split, "imgid": i, "cocoid": i,
                       "sentences": [{"raw": f"Image {i} caption {k}. ", "tokens": []} for k in range(5)]})
    (root / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    return root


def write_flickr30k(root: Path) -> Path:
    """``root/dataset_flickr30k.json`` (no ``filepath`` fields) + ``root/flickr30k-images/``: 2 test images."""
    root = Path(root)
    img_dir = root / "flickr30k-images"
    write_image(img_dir / "1000092795.jpg", (50, 40), (10, 20, 30))
    write_image(img_dir / "10002456.jpg", (30, 60), (200, 100, 50))
    ann = {"images": [
        {"filename": "1000092795.jpg", "split": "test",
         "sentences": [{"raw": "Two young guys with shaggy hair."}, {"raw": "Two men outside."}]},
        {"filename": "10002456.jpg", "split": "test", "sentences": [{"raw": "Several men in hard hats."}]},
    ]}
    (root / "dataset_flickr30k.json").write_text(json.dumps(ann))
    return img_dir


# -- tiny CLIP models --------------------------------------------------------------------------
TINY_OPEN_CLIP_ARCH = "robustmm-contract-tiny-vit"
TINY_OPEN_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def tiny_open_clip_arch(folder: Path, name: str = TINY_OPEN_CLIP_ARCH) -> str:
    """Register a tiny open_clip architecture ``name`` (a JSON config, like open_clip's own, written in
    ``folder``); returns the name, so ``load_encoder(f"open_clip:{name}@none")`` builds a random-init
    model offline."""
    import open_clip

    path = Path(folder) / f"{name}.json"
    path.write_text(json.dumps(TINY_OPEN_CLIP_CFG))
    open_clip.add_model_config(path)
    return name


def byte_chars() -> list[str]:
    """GPT-2/CLIP byte-to-unicode table: the base alphabet of a byte-level BPE vocab."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [chr(c) for c in cs]


def char_tokenizer() -> Any:
    """A character-level ``CLIPTokenizer`` (no merges): every byte character, with and without the
    end-of-word mark, then the start and end tokens."""
    from transformers import CLIPTokenizer

    chars = byte_chars()
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    return CLIPTokenizer(vocab=vocab, merges=[])


def tiny_hf_clip() -> tuple[Any, Any]:
    """A tiny random-init ``CLIPModel`` and a :func:`char_tokenizer`, in memory."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    tok = char_tokenizer()
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok.get_vocab()), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=16, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
        ),
        projection_dim=24,
    )
    torch.manual_seed(0)
    return CLIPModel(cfg), tok


def save_hf_clip(folder: Path, model: Any, tok: Any, processor: bool = True) -> Path:
    """``model`` and ``tok`` saved as a local folder for ``hf:FOLDER``, with a 32-pixel image processor
    config unless ``processor`` is False."""
    from transformers import CLIPImageProcessor

    folder = Path(folder)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    if processor:
        CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def save_tiny_hf_clip(folder: Path) -> Path:
    """:func:`tiny_hf_clip` saved as a local folder (model, tokenizer, image processor) for ``hf:FOLDER``."""
    return save_hf_clip(folder, *tiny_hf_clip())
