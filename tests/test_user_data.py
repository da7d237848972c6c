"""The user-data loaders from Python: ImageNet and ModelNet40 in their real layouts, dataset
specs, point-cloud files, streaming with worker processes, and ModuleEncoder."""
from __future__ import annotations

import io
import struct

import _user_data as ud
import numpy as np
import pytest
import torch
from torch import nn

import robustmm
from robustmm.data.pointfiles import read_points
from robustmm.data.registry import parse_dataset_spec, with_options
from robustmm.encoders import ModuleEncoder, image_preprocess
from robustmm.errors import RobustMMError


def test_imagenet_val_layout_uses_open_clip_names_and_templates(tmp_path):
    from open_clip import zero_shot_metadata as meta

    root = ud.imagenet_val(tmp_path / "inet")
    data = robustmm.load_dataset(f"imagenet:{root}", size=16)
    task = data.tasks["image"]
    assert len(data) == 6 and task.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert task.classnames == tuple(meta.IMAGENET_CLASSNAMES) and task.classnames[:2] == ("tench", "goldfish")
    assert len(task.templates) == len(meta.OPENAI_IMAGENET_TEMPLATES)
    assert task.templates[0] == meta.OPENAI_IMAGENET_TEMPLATES[0]("{}")
    assert data.get("image", [0]).shape == (1, 3, 16, 16)
    simple = robustmm.load_dataset(f"imagenet:{root},templates=simple", n=2)
    assert len(simple.tasks["image"].templates) == len(meta.SIMPLE_IMAGENET_TEMPLATES)


def test_imagenet_subset_without_a_mapping_is_refused(tmp_path):
    root = ud.imagenet_val(tmp_path / "inet", mapping=False)
    with pytest.raises(RobustMMError, match="3 synset folders, not 1000; add LOC_synset_mapping.txt"):
        robustmm.load_dataset(f"imagenet:{root}")


@pytest.mark.parametrize("writer, layout, classes", [(ud.modelnet_resampled, "normal_resampled", 3),
                                                     (ud.modelnet_off, "off", 2)])
def test_modelnet40_real_layouts(tmp_path, writer, layout, classes):
    root = writer(tmp_path / "mn")
    data = robustmm.load_dataset(f"modelnet40:{root},points=128")
    x = data.get("pointcloud", slice(None))
    assert data.info()["layout"] == layout and len(data.tasks["pointcloud"].classnames) == classes
    assert x.shape == (len(data), 128, 6) and x.abs().max() <= 1 and (x[..., 3:] == 0).all()
    radius = x[..., :3].norm(dim=-1).amax(dim=1)
    assert (radius <= 1 + 1e-5).all() and (radius > 0.5).all()  # scaled into the unit ball
    train = robustmm.load_dataset("modelnet40", root=str(root), split="train")
    assert len(train) == len(data)


def test_dataset_spec_parsing():
    assert parse_dataset_spec("imagefolder") == ("imagefolder", None, {})
    assert parse_dataset_spec("hf:/a,b/c,image=img,label=y") == ("hf", "/a,b/c", {"image": "img", "label": "y"})
    assert parse_dataset_spec("imagefolder,size=32") == ("imagefolder", None, {"size": "32"})
    assert with_options("wds:x,size=3", skip_bad="true") == "wds:x,size=3,skip_bad=true"
    with pytest.raises(RobustMMError, match="nothing after"):
        parse_dataset_spec("imagefolder:")
    with pytest.raises(RobustMMError, match="pass one of them"):
        robustmm.load_dataset("imagefolder:/a", root="/b")


def test_classes_and_templates_files(tmp_path):
    root = ud.image_folder(tmp_path / "img")
    (tmp_path / "names.txt").write_text("blue sky\ngreen grass\nred apple\n")
    (tmp_path / "templates.txt").write_text("# mine\nan image of {}.\na {} thing.\n")
    data = robustmm.load_dataset(f"imagefolder:{root},classes={tmp_path / 'names.txt'},templates={tmp_path / 'templates.txt'}")
    task = data.tasks["image"]
    assert task.classnames == ("blue sky", "green grass", "red apple") and task.templates == ("an image of {}.", "a {} thing.")
    assert data.captions[0] == ["an image of blue sky."]
    (tmp_path / "map.txt").write_text("red: a red apple\ngreen: green grass\nblue: the sky\n")
    mapped = robustmm.load_dataset(f"imagefolder:{root},classes={tmp_path / 'map.txt'}")
    assert mapped.tasks["image"].classnames == ("the sky", "green grass", "a red apple")


def test_split_folders(tmp_path):
    ud.image_folder(tmp_path / "d" / "train", per_class=2)
    ud.image_folder(tmp_path / "d" / "test", per_class=1)
    assert len(robustmm.load_dataset(f"imagefolder:{tmp_path / 'd'}", split="train")) == 6
    assert len(robustmm.load_dataset(f"imagefolder:{tmp_path / 'd'}")) == 3
    with pytest.raises(RobustMMError, match="no split folder"):
        robustmm.load_dataset(f"imagefolder:{tmp_path / 'd'}", split="val")


def test_modalities_of_class_folders(tmp_path):
    depth = robustmm.load_dataset(f"depthfolder:{ud.gray16_folder(tmp_path / 'dep')},size=8").get("depth", slice(None))
    thermal = robustmm.load_dataset(f"thermalfolder:{ud.gray16_folder(tmp_path / 'th')},size=8").get("thermal", slice(None))
    video = robustmm.load_dataset(f"videofolder:{ud.video_folder(tmp_path / 'v')},size=8,frames=2").get("video", slice(None))
    assert depth.shape == (4, 1, 8, 8) and thermal.shape == (4, 1, 8, 8) and video.shape == (4, 2, 3, 8, 8)
    assert depth[0].mean() < depth[-1].mean()  # "far" (6.8 m, sorted first) is farther than "near" (0.8 m)
    assert 0 < thermal.min() and thermal.max() < 0.2  # 16-bit counts scaled by 65535


def test_point_cloud_files_agree(tmp_path):
    pts = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, pts)
    ply_bin = (b"ply\nformat binary_little_endian 1.0\nelement vertex 40\nproperty float x\nproperty float y\n"
               b"property float z\nend_header\n" + struct.pack("<120f", *pts.reshape(-1)))
    off = "OFF\n40 0 0\n" + "\n".join(" ".join(f"{v:.7f}" for v in r) for r in pts)
    txt = "\n".join(",".join(f"{v:.7f}" for v in r) + ",0,0,1" for r in pts)
    ref = read_points("a.npy", buf.getvalue(), None)
    for name, data in (("a.ply", ply_bin), ("a.off", off.encode()), ("a.txt", txt.encode())):
        np.testing.assert_allclose(read_points(name, data, None), ref, atol=1e-5)
    assert read_points("a.npy", buf.getvalue(), 100).shape == (100, 6)


def test_streaming_with_workers_matches_in_process(tmp_path):
    root = ud.image_folder(tmp_path / "img", per_class=12)
    inline = robustmm.load_dataset(f"imagefolder:{root},size=16,workers=0")
    pooled = robustmm.load_dataset(f"imagefolder:{root},size=16,workers=2")
    torch.testing.assert_close(pooled.get("image", slice(None)), inline.get("image", slice(None)))


def test_corrupt_body_in_a_worker_is_one_line(tmp_path):
    root = ud.image_folder(tmp_path / "img", per_class=12)
    good = (root / "red" / "0.png").read_bytes()
    data = robustmm.load_dataset(f"imagefolder:{root},size=16,workers=2")
    (root / "red" / "0.png").write_bytes(good[:60])  # the header still reads; the pixels do not
    with pytest.raises(RobustMMError, match=r"red/0.png") as err:
        data.get("image", slice(None))
    assert "\n" not in str(err.value)


def test_module_encoder_with_tokenizer_and_text_model():
    vocab = {w: i for i, w in enumerate("a photo of red green blue square .".split())}

    def tokenizer(texts):
        ids = [[vocab.get(w, 0) for w in t.replace(".", " .").split()][:6] for t in texts]
        return {"ids": torch.tensor([r + [0] * (6 - len(r)) for r in ids])}

    class TextModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(len(vocab), 8)

        def forward(self, ids):
            return self.emb(ids).mean(1)

    enc = ModuleEncoder({"image": nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 8))}, tokenizer=tokenizer,
                        text_model=TextModel(), preprocess={"image": image_preprocess(8)}, name="tok")
    assert enc.embed_dim == 8 and enc.encode_text(["a red square."]).norm().item() == pytest.approx(1.0)
    x = torch.rand(2, 3, 12, 10, requires_grad=True)
    enc.encode("image", x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(RobustMMError, match="exactly one text encoder"):
        ModuleEncoder({"image": nn.Identity()})
    with pytest.raises(RobustMMError, match="not a modality"):
        ModuleEncoder({"smell": nn.Identity()}, text=lambda t: torch.ones(len(t), 2))


def test_mp4_videos_and_flac_audio_through_pyav(tmp_path):
    pytest.importorskip("av")
    for name, color in (("red", (220, 30, 30)), ("blue", (30, 40, 220))):
        (tmp_path / "v" / name).mkdir(parents=True)
        (tmp_path / "v" / name / "a.mp4").write_bytes(ud.mp4_bytes(color))
        (tmp_path / "a" / name).mkdir(parents=True)
        (tmp_path / "a" / name / "a.flac").write_bytes(ud.flac_bytes(300.0 if name == "red" else 900.0))
    video = robustmm.load_dataset(f"videofolder:{tmp_path / 'v'},size=16,frames=3").get("video", slice(None))
    assert video.shape == (2, 3, 3, 16, 16) and video[1, 0, 0].mean() > 0.5 > video[1, 0, 2].mean()  # red clip
    audio = robustmm.load_dataset(f"audiofolder:{tmp_path / 'a'},sample_rate=8000").get("audio", slice(None))
    assert audio.shape == (2, 2000) and 0.4 < float(audio.abs().max()) <= 0.51


def test_hf_parquet_files(tmp_path):
    datasets = pytest.importorskip("datasets")
    saved = ud.hf_dataset(tmp_path / "saved")
    (tmp_path / "pq").mkdir()
    datasets.load_from_disk(str(saved)).to_parquet(str(tmp_path / "pq" / "part-0.parquet"))
    data = robustmm.load_dataset(f"hf:{tmp_path / 'pq'},size=16")
    assert len(data) == 9 and data.get("image", [0, 8]).shape == (2, 3, 16, 16)
    assert data.tasks["image"].classnames == ("red", "green", "blue")


def test_csv_manifest_of_audio_groups_captions_by_path(tmp_path):
    (tmp_path / "snd").mkdir()
    rows = ["file,caption,label"]
    for name, freq in (("low", 220.0), ("high", 1760.0)):
        for i in range(2):
            (tmp_path / "snd" / f"{name}{i}.wav").write_bytes(ud.wav_bytes(freq + 10 * i))
            rows += [f"snd/{name}{i}.wav,a {name} tone.,{name}", f"snd/{name}{i}.wav,something {name}.,{name}"]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    data = robustmm.load_dataset(f"manifest:{tmp_path / 'm.csv'},sample_rate=8000")
    assert data.modalities == ("audio",) and len(data) == 4
    assert data.captions[0] == ["a low tone.", "something low."]
    assert data.tasks["audio"].classnames == ("high", "low") and data.tasks["audio"].labels.tolist() == [1, 1, 0, 0]
    assert data.get("audio", [0]).shape == (1, 2000)
