"""The example mixture shipped in ``examples/`` (the input of the README's first command).

Checks the audio file itself, that ``examples/README.md`` names its sources and their licences, and, when
the shared data pack is present, that those sources exist there with the licences the README states and
that the mixer rebuilds ``examples/noisy.wav`` sample for sample from them.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO

EXAMPLES = REPO / "examples"
NOISY = EXAMPLES / "noisy.wav"
README = EXAMPLES / "README.md"

# Where the mixer's clean and noise folders were, inside the data pack (see examples/README.md).
CLEAN_SPLIT = "test"
NOISE_SPLIT = "noise/test"

# The licence column of the data pack's manifest.csv starts with an SPDX id; examples/README.md must say which
# licence that is in these words.
LICENCE_WORDS = {
    "Apache-2.0": ["Apache License, Version 2.0", "https://www.apache.org/licenses/LICENSE-2.0"],
    "CC-BY-4.0": ["CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/"],
}


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _record() -> dict:
    """The mixer's manifest record of the example: the one ```json block of examples/README.md."""
    blocks = re.findall(r"```json\n(.*?)```", _readme(), flags=re.S)
    assert len(blocks) == 1, f"{README}: expected one ```json block (the mixture's record), found {len(blocks)}"
    return json.loads(blocks[0])


def _source_paths(record: dict) -> tuple[str, str]:
    """The speech and noise files of the example, relative to the data pack."""
    return f"{CLEAN_SPLIT}/{record['clean_source']}", f"{NOISE_SPLIT}/{record['noise_source']}"


def _mix_module():
    try:
        from jaxse.evaluation import mix
    except ImportError:  # the layout before jaxse.evaluation
        from jaxse import mix
    return mix


def test_example_audio_is_a_short_clean_16k_mono_pcm_wav():
    assert NOISY.is_file(), f"{NOISY} is missing (the README's first command enhances it)"
    assert NOISY.stat().st_size < 200_000, f"{NOISY}: {NOISY.stat().st_size} bytes, keep it under 200 kB"
    info = sf.info(str(NOISY))
    assert (info.format, info.subtype) == ("WAV", "PCM_16")
    assert info.samplerate == 16000
    assert info.channels == 1
    assert 2.0 <= info.duration <= 6.0, f"{NOISY}: {info.duration:.2f} s"

    pcm, sr = sf.read(str(NOISY), dtype="int16")
    assert sr == 16000 and pcm.ndim == 1
    x = pcm.astype(np.float64) / 32768.0
    rms_db = 10 * np.log10(np.mean(x**2))
    assert rms_db > -40.0, f"{NOISY}: nearly silent ({rms_db:.1f} dBFS RMS)"
    peak = int(np.max(np.abs(pcm.astype(np.int32))))
    assert peak < 32767, f"{NOISY}: clipped (peak {peak})"
    assert peak > 3277, f"{NOISY}: peak below -20 dBFS ({peak})"


def test_readme_record_matches_the_file():
    record = _record()
    pcm, sr = sf.read(str(NOISY), dtype="int16")
    assert record["sample_rate"] == sr
    assert record["num_samples"] == pcm.shape[0]
    assert record["snr_db"] in (0.0, 5.0)


def test_readme_names_the_sources_and_their_licences():
    text = _readme()
    record = _record()
    for rel in _source_paths(record):
        assert f"`{rel}`" in text, f"{README} does not name the source file {rel}"
    assert f"{record['snr_db']:g} dB" in text
    for words in LICENCE_WORDS.values():
        for w in words:
            assert w in text, f"{README} does not state {w!r}"
    # The attributions the two licences ask for (see the data pack's LICENSES.md).
    for credit in ("speechocean762", "arXiv:2104.01378", "Pete Warden", "arXiv:1804.03209", "Speech Commands"):
        assert credit in text, f"{README} lacks the attribution {credit!r}"
    assert "python enhance.py examples/noisy.wav" in text


def test_sources_exist_in_the_data_pack_with_the_stated_licences(data_dir: Path):
    text = _readme()
    with open(data_dir / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = {row["path"]: row for row in csv.DictReader(f)}
    for rel in _source_paths(_record()):
        assert (data_dir / rel).is_file(), f"{rel} is not in the data pack at {data_dir}"
        row = rows.get(rel)
        assert row is not None, f"{rel} has no row in {data_dir / 'manifest.csv'}"
        spdx = row["license"].split()[0].rstrip(";,")
        assert spdx in LICENCE_WORDS, f"{rel}: licence {row['license']!r} is not one examples/README.md states"
        assert LICENCE_WORDS[spdx][0] in text
        assert row["source_repo"] in text and row["source_commit"] in text and row["source_path"] in text, (
            f"{README} does not give the origin of {rel} ({row['source_repo']} {row['source_path']})")
    # Both sources come from the test parts of the pack, never from training data.
    assert all(rows[rel]["split"] in ("test", "noise_test") for rel in _source_paths(_record()))


def test_the_mixer_rebuilds_the_example(data_dir: Path, tmp_path: Path):
    from jaxse.audio import write_audio

    mix = _mix_module()
    record = _record()
    noisy, _ = mix.rebuild_mixture(record, data_dir / CLEAN_SPLIT, data_dir / NOISE_SPLIT)
    # Written as the mixer wrote it (FLAC: libsndfile quantises float to 16 bits with another scale for FLAC
    # than for WAV, one LSB apart on some samples); examples/noisy.wav holds those 16-bit samples.
    rebuilt = write_audio(tmp_path / record["noisy"], noisy, record["sample_rate"], subtype="PCM_16")
    want, _ = sf.read(str(NOISY), dtype="int16")
    got, _ = sf.read(str(rebuilt), dtype="int16")
    np.testing.assert_array_equal(got, want)


def test_the_mix_command_still_draws_this_mixture(data_dir: Path, tmp_path: Path):
    """The commands of examples/README.md give the record above: same seeded noise segment, gain and scale.

    This pins the mixer's seeded choices (a change to its hashing would make every documented test set,
    this example included, come out differently from the same command).
    """
    import shutil

    mix = _mix_module()
    record = _record()
    clean_rel, noise_rel = _source_paths(record)
    (tmp_path / "clean").mkdir()
    (tmp_path / "noise").mkdir()
    shutil.copy(data_dir / clean_rel, tmp_path / "clean" / record["clean_source"])
    shutil.copy(data_dir / noise_rel, tmp_path / "noise" / record["noise_source"])
    manifest = mix.plan_mixtures(tmp_path / "clean", tmp_path / "noise", [record["snr_db"]], seed=0)
    assert len(manifest["mixtures"]) == 1
    got = manifest["mixtures"][0]
    assert (got["noise_start"], got["scale"]) == (record["noise_start"], record["scale"]), (
        "python -m jaxse.mix --seed 0 no longer draws the noise segment that made examples/noisy.wav "
        f"(noise_start {got['noise_start']}, documented {record['noise_start']}): did the mixer's seeding change?")
    assert {k: v for k, v in got.items() if k != "noise_gain"} == {k: v for k, v in record.items() if k != "noise_gain"}
    assert got["noise_gain"] == pytest.approx(record["noise_gain"], rel=1e-9)
