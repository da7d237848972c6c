"""SynthScenes: determinism, prefix stability, domains, captions, tasks and what each modality encodes."""
from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch

from robustmm.data import synthscenes as S
from robustmm.data.base import MultimodalDataset
from robustmm.errors import EmptyDatasetError, UnknownNameError
from robustmm.modalities import MODALITIES

SIZE_WORDS = {"large": {"large", "big"}, "small": {"small", "little"}, "tiny": {"tiny"}}


@pytest.fixture(scope="module")
def small() -> MultimodalDataset:
    return S.synthscenes(n=24, seed=7)


def _single(color: str = "red", shape: str = "circle", size: str = "large", x: float = 0.0, y: float = 0.0,
            noise_seed: int = 123) -> dict:
    """A hand-made one-object scene (for controlled comparisons)."""
    return {"objects": [{"shape": shape, "color": color, "size": size, "x": x, "y": y, "vx": 0.0, "vy": 0.0}],
            "main": 0, "background": 0.1, "noise_seed": noise_seed, "captions": []}


# -- reproducibility -------------------------------------------------------------------------
def test_same_seed_is_bit_identical(small):
    again = S.synthscenes(n=24, seed=7)
    assert again.captions == small.captions and again.attributes == small.attributes
    for m in S.ALL_MODALITIES:
        assert torch.equal(again.tensors[m], small.tensors[m]), m


def test_prefix_stability(small):
    short = S.synthscenes(n=9, seed=7)
    assert short.captions == small.captions[:9]
    assert short.attributes == small.attributes[:9]
    for m in S.ALL_MODALITIES:
        assert torch.equal(short.tensors[m], small.tensors[m][:9]), m
    for m, task in short.tasks.items():
        assert torch.equal(task.labels, small.tasks[m].labels[:9])


@pytest.mark.determinism
def test_rendering_does_not_depend_on_batch_or_modality_selection():
    """Exact: numpy, one thread, every scene's arithmetic its own (no BLAS, no cross-scene sums)."""
    scenes = S.generate_scenes(S.RENDER_CHUNK + 6, seed=4)  # crosses a chunk boundary
    full = S.render(scenes)
    for i in (0, S.RENDER_CHUNK + 3):
        alone = S.render([scenes[i]])
        for m in S.ALL_MODALITIES:
            assert torch.equal(alone[m][0], full[m][i]), (m, i)
    depth_only = S.render(scenes[:5], ("depth",))
    assert set(depth_only) == {"depth"}
    assert torch.equal(depth_only["depth"], full["depth"][:5])


def test_different_seeds_differ(small):
    other = S.synthscenes(n=24, seed=8)
    assert other.captions != small.captions
    for m in S.ALL_MODALITIES:
        assert not torch.equal(other.tensors[m], small.tensors[m]), m


# -- shapes, domains ---------------------------------------------------------------------------
def test_shapes_dtypes_and_domains(small):
    expected = {"image": (3, 64, 64), "video": (4, 3, 32, 32), "audio": (4000,), "depth": (1, 64, 64),
                "thermal": (1, 64, 64), "pointcloud": (256, 6)}
    assert set(small.modalities) == set(S.ALL_MODALITIES)
    for m, shape in expected.items():
        x = small.get(m, slice(None))
        assert x.dtype == torch.float32 and tuple(x.shape) == (24, *shape), m
        MODALITIES[m].validate(x)
    assert small.name == "synthscenes" and small.seed == 7
    assert small.meta["generator_version"] == S.GENERATOR_VERSION
    assert 0.3 < float(small.tensors["audio"].abs().amax(1).median()) < 0.8  # peaks near 0.5


def test_scene_structure():
    scenes = S.generate_scenes(300, seed=0)
    counts = {len(s["objects"]) for s in scenes}
    assert counts == {1, 2, 3}
    for s in scenes:
        main, others = s["objects"][0], s["objects"][1:]
        assert main["size"] in S.MAIN_SIZES and all(o["size"] == "tiny" for o in others)
        assert all((o["color"], o["shape"]) != (main["color"], main["shape"]) for o in others)
        for o in s["objects"]:
            assert -1 < o["x"] < 1 and -1 < o["y"] < 1
            assert o["shape"] in S.SHAPES and o["color"] in S.COLORS
    shared = sum(o["color"] == s["objects"][0]["color"] for s in scenes for o in s["objects"][1:])
    distractors = sum(len(s["objects"]) - 1 for s in scenes)
    assert shared < 0.2 * distractors


def test_attributes_match_scenes(small):
    scenes = S.generate_scenes(24, seed=7)
    for a, s in zip(small.attributes, scenes):
        assert a["main"] == 0
        assert a["objects"] == [{k: o[k] for k in ("shape", "color", "size", "x", "y")} for o in s["objects"]]


# -- captions ----------------------------------------------------------------------------------
def test_captions_distinct_and_name_the_main_object_first(small):
    colors, shapes = set(S.COLORS), set(S.SHAPES)
    for caps, attr in zip(small.captions, small.attributes):
        main = attr["objects"][0]
        assert len(caps) >= 5 and len(set(caps)) == len(caps)
        for c in caps:
            words = re.findall(r"[a-z0-9]+", c)
            assert len(words) <= 24
            first_color = next(w for w in words if w in colors)
            first_shape = next(w for w in words if w in shapes)
            assert first_color == main["color"] and first_shape == main["shape"], c
            i = words.index(first_color)
            assert words[i - 1] in SIZE_WORDS[main["size"]] and words[i + 1] == main["shape"], c
            for word in ("image", "photo", "picture", "video", "audio", "sound", "depth", "thermal", "point"):
                assert word not in words, c


# -- zero-shot tasks ---------------------------------------------------------------------------
def test_tasks_consistent_with_attributes(small):
    for m in S.ALL_MODALITIES:
        task = small.task(m)
        assert "a {}." in task.templates and 3 <= len(task.templates) <= 5
        assert task.labels.dtype == torch.int64
        for label, attr in zip(task.labels.tolist(), small.attributes):
            main = attr["objects"][attr["main"]]
            want = f"{main['size']} {main['shape']}" if m == "depth" else f"{main['color']} {main['shape']}"
            assert task.classnames[label] == want
    assert len(small.task("image").classnames) == 48 and len(small.task("depth").classnames) == 12
    assert small.task("image").classnames[:2] == ("red circle", "red square")  # colour-major


def test_label_coverage():
    scenes = S.generate_scenes(2000, seed=0)
    tasks = S.zeroshot_tasks(scenes, ("image", "depth"))
    assert set(tasks["image"].labels.tolist()) == set(range(48))
    assert set(tasks["depth"].labels.tolist()) == set(range(12))


# -- what each modality encodes ----------------------------------------------------------------
def _peak_hz(wave: torch.Tensor) -> float:
    spec = np.abs(np.fft.rfft(wave.numpy() * np.hanning(wave.numel())))
    return float(np.fft.rfftfreq(wave.numel(), 1 / S.SAMPLE_RATE)[spec.argmax()])


@pytest.mark.parametrize("shape", ["circle", "square", "ring"])
def test_audio_pitch_encodes_color(shape):
    out = S.render([_single("red", shape), _single("blue", shape)], ("audio",))["audio"]
    red, blue = _peak_hz(out[0]), _peak_hz(out[1])
    assert abs(red - S.PITCH_HZ["red"]) < 6 and abs(blue - S.PITCH_HZ["blue"]) < 6
    assert abs(red - blue) > 100


def test_audio_timbre_loudness_and_timing():
    out = S.render([_single(shape="circle"), _single(shape="cross"), _single(size="small"),
                    _single(x=-0.8), _single(x=0.8)], ("audio",))["audio"]
    assert not torch.allclose(out[0], out[1], atol=0.05)  # timbre differs
    assert out[0].abs().max() > out[2].abs().max() * 1.2  # large is louder than small

    def onset(w: torch.Tensor) -> int:
        return int((w.abs() > 0.05).nonzero()[0])

    assert onset(out[4]) - onset(out[3]) > 0.1 * S.SAMPLE_RATE  # right objects sound later


def test_audio_main_object_dominates():
    scene = _single("red", "circle", "small", x=0.0)
    scene["objects"].append({"shape": "square", "color": "white", "size": "tiny", "x": -0.6, "y": 0.5,
                             "vx": 0.0, "vy": 0.0})
    wave = S.render([scene], ("audio",))["audio"][0]
    assert abs(_peak_hz(wave) - S.PITCH_HZ["red"]) < 6


def test_thermal_encodes_color():
    scenes = [_single(c, "square") for c in S.COLORS]
    heat = S.render(scenes, ("thermal",))["thermal"][:, 0, 28:36, 28:36].mean((1, 2))
    levels = torch.tensor([S.TEMPERATURE[c] for c in S.COLORS])
    assert torch.allclose(heat, levels, atol=0.04)
    assert len(set(torch.round(heat * 10).tolist())) == 8


def test_depth_carries_no_color_but_size():
    scenes = S.generate_scenes(12, seed=3)
    recolored = copy.deepcopy(scenes)
    for s in recolored:
        for o in s["objects"]:
            o["color"] = S.COLORS[(S.COLORS.index(o["color"]) + 3) % len(S.COLORS)]
    a, b = S.render(scenes, ("depth", "image")), S.render(recolored, ("depth", "image"))
    assert torch.equal(a["depth"], b["depth"])
    assert not torch.equal(a["image"], b["image"])
    sizes = S.render([_single(size="large"), _single(size="small")], ("depth",))["depth"][:, 0, 32, 32]
    assert sizes[0] > sizes[1] + 0.1


def test_image_shows_main_color_at_its_position():
    for color in ("red", "green", "blue"):
        img = S.render([_single(color, "square", x=0.5, y=0.5)], ("image",))["image"][0]
        # x=0.5 -> column 48, y=0.5 -> row 16 (y points up)
        rgb = img[:, 14:19, 46:51].mean((1, 2))
        assert torch.allclose(rgb, torch.tensor(S.RGB[color]), atol=0.15), (color, rgb)
        assert img[:, 40:, :20].mean() < 0.3  # dark background elsewhere


def test_video_objects_move():
    scene = _single("white", "square", "large")
    scene["objects"][0].update(vx=0.1, vy=0.0)
    vid = S.render([scene], ("video",))["video"][0]
    col_mass = vid[:, 0].sum(1)  # (T, W): brightness per column
    centre = (col_mass * torch.arange(32.0)).sum(1) / col_mass.sum(1)
    assert (centre.diff() > 0.5).all()


def test_pointcloud_content():
    scene = _single("blue", "circle", "large", x=0.3, y=-0.2)
    pc = S.render([scene], ("pointcloud",))["pointcloud"][0]
    rgb = (pc[:, 3:] + 1) / 2
    on_object = (rgb - torch.tensor(S.RGB["blue"])).abs().amax(1) < 0.15
    assert on_object.sum() >= 180
    xy = pc[on_object, :2]
    assert ((xy - torch.tensor([0.3, -0.2])).norm(dim=1) <= S.RADIUS["large"] * 0.95).all()
    assert (pc[on_object, 2] > pc[~on_object, 2].max()).all()  # objects stand above the floor
    assert on_object[:48].any() and (~on_object[:48]).any()  # randomly ordered, not grouped


# -- dataset entry points ----------------------------------------------------------------------
def test_lazy_equals_eager(small):
    lazy = S.synthscenes(n=24, seed=7, lazy=True, modalities=("image", "audio"))
    assert set(lazy.modalities) == {"image", "audio"} and set(lazy.tasks) == {"image", "audio"}
    idx = torch.tensor([3, 0, 17])
    for m in ("image", "audio"):
        assert torch.equal(lazy.get(m, idx), small.tensors[m][idx])
    sub = lazy.subset(torch.tensor([5, 6]))
    assert torch.equal(sub.get("image", [1]), small.tensors["image"][[6]])


def test_load_synthscenes_defaults_and_errors():
    ds = S.load_synthscenes(split="val", n=3, modalities=("depth",))
    assert ds.split == "val" and ds.seed == S.SPLIT_SEEDS["val"] and len(ds) == 3
    assert torch.equal(ds.tensors["depth"], S.synthscenes(n=3, seed=1, modalities="depth").tensors["depth"])
    assert S.SPLIT_SIZES == {"train": 10000, "val": 1000, "test": 1000}
    with pytest.raises(UnknownNameError):
        S.load_synthscenes(split="dev", n=2)
    with pytest.raises(UnknownNameError):
        S.synthscenes(n=2, modalities=("smell",))
    with pytest.raises(EmptyDatasetError):
        S.synthscenes(n=0)


def test_registered_in_dataset_registry():
    """The registry's "synthscenes" is this loader (public names only: no registry privates)."""
    from robustmm.data import list_datasets, load_dataset

    assert "synthscenes" in list_datasets()
    ds = load_dataset("synthscenes", split="test", n=2, modalities=("audio",))
    direct = S.load_synthscenes(split="test", n=2, modalities=("audio",))
    assert ds.captions == direct.captions and torch.equal(ds.tensors["audio"], direct.tensors["audio"])
    assert ds.info()["name"] == "synthscenes" and ds.info()["seed"] == 2
