"""The training input at corpus scale: the grain pipeline (the batches of ``train_batch`` with 0 or N workers),
the bounded decode cache, manifests (``python -m jaxse.data.manifest``, manifests as data roots, the header
store a folder run keeps in its workdir)."""

from __future__ import annotations

import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # for `configs`

from jaxse.data import CleanSpeechDataset, crop_phases  # noqa: E402
from jaxse.data import files as data_files  # noqa: E402
from jaxse.data.cache import DecodeCache  # noqa: E402
from jaxse.data.files import WORKDIR_MANIFEST, header_store, read_manifest, write_manifest  # noqa: E402
from jaxse.data.manifest import build_manifest, main as manifest_main  # noqa: E402
from jaxse.data.pipeline import PipelineSettings, StepBatch, TrainBatches, default_num_workers  # noqa: E402
from jaxse.sgmse.data import MixingDataset  # noqa: E402
from jaxse.spectral import SpecConfig  # noqa: E402

SPEC = SpecConfig()
FRAMES = 8  # 896-sample crops


def _write(root: Path, count: int, seed: int = 0, seconds: float = 0.25, prefix: str = "utt") -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        n = int(seconds * 16000) + 311 * i
        x = 0.3 * np.sin(2 * np.pi * (150 + 70 * i) * np.arange(n) / 16000) + 0.05 * rng.standard_normal(n)
        sub = root / f"spk{i % 2}"
        sub.mkdir(exist_ok=True)
        sf.write(sub / f"{prefix}_{i}.flac", x.astype(np.float32), 16000, subtype="PCM_16")
    return root


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    _write(root / "train", 6)
    _write(root / "noise", 2, seed=1, seconds=0.5, prefix="noise")
    return root


def _ds(root, frames=FRAMES, **kw):
    return CleanSpeechDataset(root, crop_frames=frames, spec=SPEC, **kw)


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    return a.dtype == b.dtype and np.array_equal(a, b)


# ------------------------------------------------------------------------------------ the pipeline


class _Cfg(dict):
    __getattr__ = dict.__getitem__


def _phases(schedule: str, frames: int = FRAMES, batch: int = 4):
    return crop_phases(_Cfg(data=_Cfg(crop_schedule=schedule, crop_frames=frames), training=_Cfg(batch_size=batch)))


@pytest.mark.parametrize("workers", [0, 2])
def test_pipeline_gives_the_batches_of_train_batch(speech, workers):
    ds = _ds(speech / "train")
    phases = _phases(f"0:{FRAMES}x4,3:16x2")
    phase_data = {f: ds.with_crop_frames(f) for _, f, _ in phases}
    with TrainBatches(phase_data, phases, seed=7, start=1, stop=6, process_index=1, process_count=2,
                      num_workers=workers, prefetch=2) as batches:
        got = list(batches)
    assert [s for s, _ in got] == [2, 3, 4, 5, 6]
    for step, rows in got:
        frames, batch = (FRAMES, 4) if step <= 3 else (16, 2)
        expected = phase_data[frames].train_batch(7, step - 1, batch, 1, 2)
        assert rows.shape == (batch // 2, SPEC.crop_length(frames)) and _same(rows, expected), step


def test_pipeline_with_workers_mixes_on_the_fly(speech):
    ds = MixingDataset(speech / "train", speech / "noise", crop_frames=FRAMES, spec=SPEC, snr_range=(0, 5))
    phases = _phases("")
    with TrainBatches({FRAMES: ds}, phases, seed=3, start=0, stop=3, num_workers=2, prefetch=1) as batches:
        for step in (1, 2, 3):
            assert _same(batches.next(step), ds.train_batch(3, step - 1, 4))
        with pytest.raises(StopIteration):
            batches.next(4)
    with TrainBatches({FRAMES: ds}, phases, seed=3, start=0, stop=3) as batches:
        with pytest.raises(RuntimeError, match="step 2 asked for, the next one is 1"):
            batches.next(2)
    step, rows = StepBatch({FRAMES: ds}, phases, 3)(2)
    assert step == 2 and _same(rows, ds.train_batch(3, 1, 4))


def test_pipeline_settings_from_config():
    assert default_num_workers(16) == 8 and default_num_workers(2) == 1 and default_num_workers(1) == 0
    from configs import default

    config = default.get_config()
    s = PipelineSettings.from_config(config)
    assert s.num_workers == default_num_workers() and s.prefetch == 2 and s.cache_mb == 0
    old = default.get_config()
    for k in ("num_workers", "prefetch", "cache_mb"):
        del old.data[k]  # a config written before these fields: the defaults
    assert PipelineSettings.from_config(old) == s
    for field, value in (("num_workers", -1), ("prefetch", 0), ("cache_mb", -5.0), ("cache_mb", float("nan"))):
        bad = default.get_config()
        bad.data[field] = value
        with pytest.raises(ValueError, match=f"data.{field} must be"):
            PipelineSettings.from_config(bad)


# ------------------------------------------------------------------------------------ the cache


def test_decode_cache_is_bounded_in_bytes():
    rng = np.random.default_rng(0)
    cache = DecodeCache(10_000)
    sizes = rng.integers(100, 3000, size=300)
    for n in sizes:
        key = int(rng.integers(0, 40))
        if cache.get(key) is None:
            cache.put(key, np.zeros(int(n), np.float32))  # 400 .. 12000 bytes: some never fit
        assert cache.nbytes <= 10_000 and cache.nbytes == sum(v.nbytes for v in cache._entries.values())
    assert cache.hits + cache.misses == 300 and cache.hits > 0 and cache.misses > 0
    lru = DecodeCache(3 * 400)
    for key in "abc":
        lru.put(key, np.zeros(100, np.float32))
    lru.get("a")  # now b is the least recently used
    lru.put("d", np.zeros(100, np.float32))
    assert lru.keys() == ["c", "a", "d"] and lru.nbytes == 1200
    lru.put("big", np.zeros(301, np.float32))  # larger than the bound: not stored, nothing evicted
    assert "big" not in lru and len(lru) == 3
    lru.put("pair", (np.zeros(100, np.float32), np.zeros(100, np.float32)))  # a pair counts both arrays
    assert lru.nbytes == 1200 and lru.keys() == ["d", "pair"]
    off = DecodeCache.of_mb(0)
    off.put("x", np.zeros(1, np.float32))
    assert not off.enabled and len(off) == 0 and DecodeCache.of_mb(None).max_bytes is None
    assert DecodeCache.of_mb(1.5).max_bytes == 3 << 19
    with pytest.raises(ValueError, match="cache_mb"):
        DecodeCache.of_mb(-1)
    copy = pickle.loads(pickle.dumps(lru))  # to a worker: the bound, not the entries
    assert copy.max_bytes == lru.max_bytes and len(copy) == 0 and copy.nbytes == 0


def test_data_sets_read_through_a_bounded_cache(speech):
    ds = _ds(speech / "train", cache=DecodeCache(40_000))  # two decoded files (16 .. 22 kB each)
    for step in range(6):
        ds.train_batch(0, step, 4)
        assert 0 < ds.cache.nbytes <= 40_000 and len(ds.cached_indices) <= 2
    assert ds.num_decodes > len(ds)  # evicted files are decoded again
    none = _ds(speech / "train", cache=DecodeCache(0))
    assert _same(none.train_batch(0, 4, 4), ds.train_batch(0, 4, 4)) and none.cached_indices == []
    mix = MixingDataset(speech / "train", speech / "noise", crop_frames=FRAMES, spec=SPEC)
    shared = DecodeCache(None)
    mix.set_cache(shared)
    mix.with_crop_frames(16).train_batch(0, 0, 4)  # a view made later shares it
    kinds = {k[0] for k in shared.keys()}
    assert kinds == {"audio", "noise"} and mix.cached_noise_indices and mix.clean_dataset.cached_indices


# ------------------------------------------------------------------------------------ manifests


def test_manifest_round_trip_and_data_set_from_it(speech, tmp_path):
    out = tmp_path / "lists" / "train.jsonl"
    assert manifest_main([str(speech / "train"), "-o", str(out), "--jobs", "2"]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    folder = _ds(speech / "train")
    assert len(lines) == len(folder) and set(lines[0]) == {"path", "duration", "sample_rate", "frames"}
    assert all(Path(r["path"]).is_absolute() for r in lines)  # not under the manifest's folder: absolute
    entries = read_manifest(out)
    assert [e.path for e in entries] == folder.files and entries[0].frames == sf.info(folder.files[0]).frames
    listed = _ds(out)
    assert listed.files == folder.files and np.array_equal(listed.lengths, folder.lengths)
    assert _same(listed.train_batch(5, 2, 4), folder.train_batch(5, 2, 4))
    local = speech / "train" / "local.jsonl"  # files under the manifest's folder: relative paths
    entries, errors = build_manifest([speech / "train"], local)
    assert not errors and json.loads(local.read_text().splitlines()[0])["path"].startswith("spk0/")
    assert _ds(local).files == folder.files
    local.unlink()


def test_manifest_cli_bad_input_writes_nothing(speech, tmp_path, capsys):
    out = tmp_path / "m.jsonl"
    assert manifest_main([str(tmp_path / "nowhere"), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nowhere" in err and not out.exists()
    assert manifest_main([str(speech / "train"), "-o", str(tmp_path / "m.txt")]) == 2 and not out.exists()
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"not audio at all")
    assert manifest_main([str(speech / "train"), str(bad), "-o", str(out)]) == 0
    assert "1 unreadable left out" in capsys.readouterr().err and len(read_manifest(out)) == 6


def test_missing_or_malformed_manifest_entries_are_one_line(speech, tmp_path):
    out = tmp_path / "m.jsonl"
    build_manifest([speech / "train"], out)
    lines = out.read_text().splitlines()
    gone = json.loads(lines[2])
    gone["path"] = str(tmp_path / "gone.flac")
    (tmp_path / "missing.jsonl").write_text("\n".join(lines[:2] + [json.dumps(gone)] + lines[3:]) + "\n")
    with pytest.raises(ValueError) as exc:
        _ds(tmp_path / "missing.jsonl")
    msg = str(exc.value)
    assert "\n" not in msg and "1 of 6 files named in the manifest are missing" in msg and "gone.flac" in msg
    (tmp_path / "junk.jsonl").write_text(lines[0] + "\n{oops\n" + '{"path": "a.wav", "frames": 0}\n')
    with pytest.raises(ValueError, match=r"2 malformed manifest line\(s\), first line 2: not JSON"):
        _ds(tmp_path / "junk.jsonl")


def test_a_20000_entry_manifest_loads_in_seconds(speech, tmp_path):
    files = _ds(speech / "train").files
    entries = read_manifest(_write_manifest(files, tmp_path / "big.jsonl", 20_000))
    assert len(entries) == 20_000
    t0 = time.perf_counter()
    big = _ds(tmp_path / "big.jsonl", cache=DecodeCache(0))
    seconds = time.perf_counter() - t0
    assert len(big) == 20_000 and seconds < 10, seconds
    assert big.train_batch(0, 0, 4).shape == (4, SPEC.crop_length(FRAMES))


def _write_manifest(files, out: Path, count: int) -> Path:
    """``count`` entries naming ``files`` over and over, each under its own id."""
    infos = [sf.info(f) for f in files]
    with open(out, "w") as fh:
        for k in range(count):
            f, info = files[k % len(files)], infos[k % len(files)]
            fh.write(json.dumps({"id": f"utt{k:06d}", "path": str(f), "duration": info.duration,
                                 "sample_rate": info.samplerate, "frames": info.frames}) + "\n")
    return out


def test_folder_run_keeps_its_headers_in_the_workdir(speech, tmp_path, monkeypatch):
    from configs import default
    from jaxse import training

    config = default.get_config()
    config.model.update(dict(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=()))
    config.data.update(dict(train_dir=str(speech / "train"), valid_dir=str(speech / "train"), crop_frames=FRAMES))
    config.training.update(dict(batch_size=2, eval_batch_size=2, num_valid=2))
    workdir = tmp_path / "run"
    probed = []
    real = data_files.probe_audio
    monkeypatch.setattr(data_files, "probe_audio", lambda p: probed.append(p) or real(p))
    first = training._setup(config, workdir)
    store = workdir / WORKDIR_MANIFEST
    assert len(probed) == 6 and store.is_file() and len(read_manifest(store)) == 6
    probed.clear()
    again = training._setup(config, workdir)  # a resume: headers from the store
    assert probed == [] and again.train_ds.files == first.train_ds.files
    assert np.array_equal(again.train_ds.lengths, first.train_ds.lengths)
    assert again.train_ds.cache is again.valid_ds.cache and again.train_ds.cache.max_bytes == 0
    _write(speech / "train_more", 1, seed=5)
    config.data.train_dir = f"{speech / 'train'},{speech / 'train_more'}"
    training._setup(config, workdir)  # a new file is probed and added
    assert len(probed) == 1 and len(read_manifest(store)) == 7
    with header_store(tmp_path / "elsewhere.jsonl") as headers:
        _ds(speech / "train")
    assert len(headers.new) == 6 and headers.save() == tmp_path / "elsewhere.jsonl"
    write_manifest([], tmp_path / "empty.jsonl")
    config.data.train_dir = str(tmp_path / "empty.jsonl")
    with pytest.raises(training.SetupError, match="empty manifest"):
        training._setup(config, tmp_path / "run2")
    assert not (tmp_path / "run2").exists()
