"""The Bind benchmark loaders (ESC-50, MSR-VTT 1k-A, NYU-Depth v2, LLVIP) on fixture files in their real formats."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _bind_data import ESC_CATEGORIES, write_esc50, write_llvip, write_msrvtt, write_nyu, write_wav

from robustmm.data.llvip import LLVIP_CLASSES
from robustmm.data.media import read_wav, resample
from robustmm.data.nyu_depth import NYU_CLASSES
from robustmm.data.registry import list_datasets, load_dataset
from robustmm.errors import MissingDataError, UnknownNameError
from robustmm.modalities import get_modality


def test_registered():
    assert {"esc50", "msrvtt", "nyu_depth_v2", "llvip"} <= set(list_datasets())


# -- ESC-50 ------------------------------------------------------------------------------------------
def test_esc50_reads_csv_and_wavs(tmp_path):
    write_esc50(tmp_path)
    ds = load_dataset("esc50", root=str(tmp_path))
    assert len(ds) == 10 and ds.task("audio").classnames[:3] == ("dog", "rooster", "chirping birds")
    x = ds.get("audio", [0, 1])
    assert x.shape == (2, 80000)  # 5 s resampled from 44.1 kHz to 16 kHz
    get_modality("audio").validate(x)
    label = int(ds.task("audio").labels[0])
    f = 300 * (label + 1)  # the fixture's tone of this class, still at f Hz after resampling
    spec = np.abs(np.fft.rfft(x[0].numpy()))
    assert abs(np.argmax(spec) * 16000 / 80000 - f) <= 1
    assert ds.captions[0] == [f"a sound of {ESC_CATEGORIES[label].replace('_', ' ')}."]
    assert ds.task("audio").prompts()[0] == ["a sound of dog."]


def test_esc50_splits(tmp_path):
    write_esc50(tmp_path)
    assert len(load_dataset("esc50", split="train", root=str(tmp_path))) == 8
    assert len(load_dataset("esc50", split="fold5", root=str(tmp_path))) == 2
    assert len(load_dataset("esc50", n=3, seed=1, root=str(tmp_path))) == 3
    with pytest.raises(UnknownNameError):
        load_dataset("esc50", split="fold6", root=str(tmp_path))


def test_esc50_missing_files_are_one_line(tmp_path):
    with pytest.raises(MissingDataError, match="meta/esc50.csv") as e:
        load_dataset("esc50", root=str(tmp_path))
    assert "\n" not in str(e.value)
    write_esc50(tmp_path)
    next((tmp_path / "audio").glob("*.wav")).unlink()
    with pytest.raises(MissingDataError, match="1 of 10 wav files not found"):
        load_dataset("esc50", root=str(tmp_path))


def test_read_wav_formats_and_resampler(tmp_path):
    t = np.arange(4410) / 44100.0
    sig = 0.5 * np.sin(2 * math.pi * 441.0 * t)
    write_wav(tmp_path / "a.wav", sig, 44100, width=3, channels=2)
    x, sr = read_wav(tmp_path / "a.wav")
    assert sr == 44100 and x.shape == (4410,)
    np.testing.assert_allclose(x, sig, atol=1e-6)
    y = resample(x, 44100, 16000)
    assert y.shape == (1600,)
    want = 0.5 * np.sin(2 * math.pi * 441.0 * np.arange(1600) / 16000.0)
    np.testing.assert_allclose(y[100:-100], want[100:-100], atol=2e-3)  # band-limited: the tone survives


# -- MSR-VTT -------------------------------------------------------------------------------------------
def test_msrvtt_frames_folders(tmp_path):
    write_msrvtt(tmp_path)
    ds = load_dataset("msrvtt", root=str(tmp_path), num_frames=3, image_size=24)
    assert len(ds) == 6 and ds.captions[2] == ["a person is cooking dish number 2"]
    v = ds.get("video", [0, 5])
    assert v.shape == (2, 3, 3, 24, 24)
    get_modality("video").validate(v)
    assert not ds.tasks  # retrieval only
    train = load_dataset("msrvtt", split="train", root=str(tmp_path), num_frames=2, image_size=16)
    assert len(train) == 4 and train.captions[1] == ["a dog runs in a park, take 0", "a dog runs in a park, take 1"]
    assert train.get("video", [3]).shape == (1, 2, 3, 16, 16)


def test_msrvtt_missing_is_one_line(tmp_path):
    with pytest.raises(MissingDataError, match="MSRVTT_JSFUSION_test.csv"):
        load_dataset("msrvtt", root=str(tmp_path))
    write_msrvtt(tmp_path, n=2)
    import shutil

    shutil.rmtree(tmp_path / "frames" / "video7011")
    with pytest.raises(MissingDataError, match="1 of 2 videos not found"):
        load_dataset("msrvtt", root=str(tmp_path))


def test_msrvtt_mp4_needs_pyav_or_decodes(tmp_path):
    write_msrvtt(tmp_path, n=1)
    import shutil

    shutil.rmtree(tmp_path / "frames")
    mp4 = tmp_path / "videos" / "all" / "video7010.mp4"
    mp4.parent.mkdir(parents=True)
    try:
        import av
    except ImportError:
        mp4.write_bytes(b"not decoded without PyAV")
        ds = load_dataset("msrvtt", root=str(tmp_path))
        with pytest.raises(MissingDataError, match="PyAV"):
            ds.get("video", [0])
        return
    with av.open(str(mp4), "w") as out:  # a real mp4 of 6 frames
        stream = out.add_stream("mpeg4", rate=6)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for k in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), 40 * k, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    v = load_dataset("msrvtt", root=str(tmp_path), num_frames=3, image_size=16).get("video", [0])
    assert v.shape == (1, 3, 3, 16, 16)
    assert float(v[0, 0].mean()) < float(v[0, 2].mean())  # frame 0 is darker than the last


# -- NYU-Depth v2 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["folders", "nicr"])
def test_nyu_depth_layouts(tmp_path, layout):
    write_nyu(tmp_path, layout)
    ds = load_dataset("nyu_depth_v2", root=str(tmp_path), image_size=24)
    task = ds.task("depth")
    assert task.classnames == NYU_CLASSES and len(ds) == 6
    names = [NYU_CLASSES[i] for i in task.labels.tolist()]
    assert set(names) == {"bedroom", "dining room", "others", "kitchen"}
    d = ds.get("depth", [0, 1])
    assert d.shape == (2, 1, 24, 24)
    get_modality("depth").validate(d)


def test_nyu_depth_values(tmp_path):
    from PIL import Image

    (tmp_path / "test" / "office").mkdir(parents=True)
    mm = np.array([[0, 2500], [5000, 15000]], dtype=np.uint16)  # no reading, 2.5 m, 5 m, beyond 10 m
    Image.fromarray(mm).save(tmp_path / "test" / "office" / "a.png")
    d = load_dataset("nyu_depth_v2", root=str(tmp_path), image_size=2).get("depth", [0])[0, 0]
    torch.testing.assert_close(d, torch.tensor([[1.0, 0.75], [0.5, 0.0]]))  # 1 - min(m, 10) / 10


def test_nyu_missing_is_one_line(tmp_path):
    with pytest.raises(MissingDataError, match="no test or val folder"):
        load_dataset("nyu_depth_v2", root=str(tmp_path))


# -- LLVIP --------------------------------------------------------------------------------------------
def test_llvip_release_crops(tmp_path):
    write_llvip(tmp_path)
    ds = load_dataset("llvip", root=str(tmp_path), image_size=16)
    task = ds.task("thermal")
    assert task.classnames == LLVIP_CLASSES
    assert int(task.labels.sum()) == 3 and len(ds) == 6  # 3 pedestrians (the 4 px box skipped) + 3 backgrounds
    x = ds.get("thermal", list(range(len(ds))))
    assert x.shape == (6, 1, 16, 16)
    get_modality("thermal").validate(x)
    people, background = x[task.labels == 1], x[task.labels == 0]
    assert float(people.mean()) > 0.8 > float(background.mean())  # person crops are the warm boxes
    assert ds.captions[int(torch.nonzero(task.labels)[0])] == ["a thermal infrared photo of people."]


def test_llvip_class_folders_and_missing(tmp_path):
    from PIL import Image

    for c in ("person", "background"):
        (tmp_path / "val" / c).mkdir(parents=True)
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "val" / c / "0.jpg")
    ds = load_dataset("llvip", root=str(tmp_path), image_size=8)
    assert sorted(ds.task("thermal").labels.tolist()) == [0, 1]
    with pytest.raises(MissingDataError, match="infrared"):
        load_dataset("llvip", root=str(tmp_path / "nowhere"))
