"""Tests for jaxse.audio: reading, writing (atomic), resampling and file discovery."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from jaxse.audio import AudioError, find_audio_files, read_audio, resample, resampled_length, write_audio


def _sine(freq, sr, seconds=0.5, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x, sr):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * sr / len(x)


@pytest.mark.parametrize("ext", [".wav", ".flac"])
def test_round_trip_pcm16(tmp_path, ext):
    x = _sine(440, 16000)
    path = write_audio(tmp_path / f"a{ext}", x, 16000)
    info = sf.info(str(path))
    assert info.subtype == "PCM_16" and info.samplerate == 16000 and info.channels == 1
    a = read_audio(path)
    assert a.samples.dtype == np.float32 and a.samples.shape == x.shape
    assert a.sample_rate == a.orig_sample_rate == 16000 and a.num_channels == 1
    assert a.path == str(path)
    np.testing.assert_allclose(a.samples, x, atol=1.0 / 32768)


def test_round_trip_float_wav_exact(tmp_path):
    x = np.random.default_rng(0).uniform(-2, 2, 1000).astype(np.float32)
    write_audio(tmp_path / "f.wav", x, 8000, subtype="FLOAT")
    np.testing.assert_array_equal(read_audio(tmp_path / "f.wav").samples, x)  # floats are not clipped


def test_write_clips_pcm_without_wraparound(tmp_path):
    write_audio(tmp_path / "c.wav", np.array([1.0, 1.5, -1.0, -3.0, 0.25]), 16000)
    y = read_audio(tmp_path / "c.wav").samples
    np.testing.assert_allclose(y, [32767 / 32768, 32767 / 32768, -1.0, -1.0, 0.25])


def test_write_creates_parents_and_rejects_nan(tmp_path):
    p = write_audio(tmp_path / "x" / "y" / "z.flac", np.zeros(100), 16000)
    assert p.is_file()
    with pytest.raises(ValueError, match="non-finite"):
        write_audio(tmp_path / "nan.wav", np.array([0.0, np.nan]), 16000)
    assert not (tmp_path / "nan.wav").exists()


def test_multichannel_mixdown(tmp_path):
    left, right = _sine(300, 22050), _sine(1000, 22050, amp=0.25)
    write_audio(tmp_path / "st.wav", np.stack([left, right], axis=1), 22050, subtype="FLOAT")
    a = read_audio(tmp_path / "st.wav")
    assert a.num_channels == 2 and a.samples.ndim == 1
    np.testing.assert_allclose(a.samples, (left + right) / 2, atol=1e-7)


def test_read_resamples(tmp_path):
    write_audio(tmp_path / "r.wav", _sine(500, 8000, seconds=0.3), 8000)
    a = read_audio(tmp_path / "r.wav", target_sr=16000)
    assert a.sample_rate == 16000 and a.orig_sample_rate == 8000
    assert a.samples.shape == (4800,) and a.samples.dtype == np.float32
    assert abs(_peak_hz(a.samples, 16000) - 500) < 5


def test_resample_lengths():
    for n in [1, 2, 7, 999, 16000, 32641]:
        x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
        up = resample(x, 16000, 44100)
        assert up.shape == (round(n * 44100 / 16000),) and up.dtype == np.float32
        assert resample(up, 44100, 16000).shape == (n,)
    assert resampled_length(3, 16000, 8000) == 2  # 1.5 rounds up
    batch = np.zeros((2, 3, 1000), np.float32)
    assert resample(batch, 16000, 22050).shape == (2, 3, 1378)
    x = np.ones(10, np.float32)
    assert resample(x, 16000, 16000) is x


@pytest.mark.parametrize("mid_sr,freq", [(44100, 1000.0), (8000, 440.0)])
def test_resample_keeps_frequency(mid_sr, freq):
    x = _sine(freq, 16000, seconds=1.0)
    mid = resample(x, 16000, mid_sr)
    back = resample(mid, mid_sr, 16000)
    assert back.shape == x.shape
    assert abs(_peak_hz(mid, mid_sr) - freq) <= 1.0
    assert abs(_peak_hz(back, 16000) - freq) <= 1.0
    # away from the edges (filter transients), the round trip is close to the original
    inner = slice(200, -200)
    assert np.max(np.abs(back[inner] - x[inner])) < 0.02


def test_error_empty_file(tmp_path):
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        read_audio(tmp_path / "empty.wav")
    (tmp_path / "zero_bytes.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="zero_bytes.wav"):
        read_audio(tmp_path / "zero_bytes.wav")


def test_error_non_audio(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("this is not audio\n" * 20)
    with pytest.raises(AudioError) as err:
        read_audio(p)
    msg = str(err.value)
    assert "notes.wav" in msg and "not a readable audio file" in msg and "\n" not in msg


def test_error_nan(tmp_path):
    x = np.zeros(100, np.float32)
    x[10] = np.nan
    x[20] = np.inf
    sf.write(str(tmp_path / "nan.wav"), x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: 2 non-finite"):
        read_audio(tmp_path / "nan.wav")


def test_error_missing(tmp_path):
    with pytest.raises(AudioError, match="missing.flac: no such file"):
        read_audio(tmp_path / "missing.flac")
    with pytest.raises(AudioError, match="directory"):
        read_audio(tmp_path)


def test_write_is_atomic(tmp_path, monkeypatch):
    import os

    from jaxse import audio

    target = tmp_path / "out" / "a.flac"
    real_fsync = os.fsync

    def failing_fsync(fd):  # the encoded data (or part of it) has reached the temporary file; then the disk is full
        assert any(p.name.endswith(".part") and p.stat().st_size > 0 for p in target.parent.iterdir())
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(audio.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="simulated"):
        write_audio(target, np.zeros(1000), 16000)
    assert list(target.parent.iterdir()) == []  # neither the output nor a temporary file

    # an existing file survives a failed overwrite untouched
    monkeypatch.setattr(audio.os, "fsync", real_fsync)
    write_audio(target, np.full(1000, 0.5), 16000)
    monkeypatch.setattr(audio.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        write_audio(target, np.zeros(1000), 16000)
    monkeypatch.setattr(audio.os, "fsync", real_fsync)
    assert [p.name for p in target.parent.iterdir()] == ["a.flac"]
    np.testing.assert_allclose(read_audio(target).samples, 0.5)


def test_write_temp_name_and_format(tmp_path, monkeypatch):
    from jaxse import audio

    seen = {}
    real_encode, real_atomic = audio.encode_audio, audio.write_atomic

    def spy_encode(data, samplerate, subtype, fmt):
        seen.update(subtype=subtype, format=fmt)
        return real_encode(data, samplerate, subtype, fmt)

    def spy_atomic(path, write):
        def spy_write(fh):
            seen["during"] = [q.name for q in tmp_path.iterdir()]  # the temporary file, already created
            return write(fh)

        return real_atomic(path, spy_write)

    monkeypatch.setattr(audio, "encode_audio", spy_encode)
    monkeypatch.setattr(audio, "write_atomic", spy_atomic)
    write_audio(tmp_path / "b.ogg", _sine(440, 16000), 16000)
    [name] = seen["during"]
    assert name.startswith(".b.ogg.") and name.endswith(".part")
    assert seen["format"] == "OGG" and seen["subtype"] == "VORBIS"
    assert sf.info(str(tmp_path / "b.ogg")).format == "OGG"
    assert [p.name for p in tmp_path.iterdir()] == ["b.ogg"]
    with pytest.raises(ValueError, match="extension"):
        write_audio(tmp_path / "b.xyz", np.zeros(10), 16000)


def test_find_audio_files(tmp_path):
    for rel in ["b.wav", "a/c.FLAC", "a/d.Ogg", "a/e.txt", "z/deep/f.aif", "g.wav.part"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    found = find_audio_files(tmp_path)
    assert found == sorted(found)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/c.FLAC", "a/d.Ogg", "b.wav", "z/deep/f.aif"]
    assert find_audio_files(tmp_path, extensions=("wav",)) == [tmp_path / "b.wav"]
    assert find_audio_files(tmp_path / "a" / "e.txt") == [tmp_path / "a" / "e.txt"]
    with pytest.raises(FileNotFoundError):
        find_audio_files(tmp_path / "nope")

