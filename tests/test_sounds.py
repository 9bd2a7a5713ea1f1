"""The generated prompt set, Asterisk-style prompt lookup and decoding to 8 kHz PCM."""

from __future__ import annotations

import math
import os
import shutil
import struct
import subprocess
import sys
import warnings
import wave
from pathlib import Path

import pytest

from voicemail.sounds import SoundLibrary, SoundNotFound, UnsupportedSoundFormat

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "prompts"
GENERATOR = PROMPTS / "generate.py"
ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds")
# A handful of entries covering speech, a subfolder, the tone and the silence directive.
SAMPLE_ENTRIES = ["vm-intro", "digits/h-21", "beep", "silence/1"]


def manifest() -> dict[str, str]:
    lines = (PROMPTS / "manifest-en.tsv").read_text(encoding="utf-8").splitlines()
    return dict(line.split("\t", 1) for line in lines if line.strip())


def tone(frequency: float, seconds: float, rate: int, amplitude: int = 10000) -> bytes:
    count = round(seconds * rate)
    return struct.pack(
        f"<{count}h",
        *(round(amplitude * math.sin(2 * math.pi * frequency * i / rate)) for i in range(count)),
    )


def write_wav(path: Path, pcm: bytes, rate: int = 8000, channels: int = 1, width: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(pcm)
    return path


def sox(*args: str) -> None:
    subprocess.run(["sox", "-D", *args], check=True, capture_output=True, timeout=30)


def zero_crossings(pcm: bytes) -> int:
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    return sum(1 for a, b in zip(samples, samples[1:], strict=False) if (a < 0) != (b < 0))


def run_generator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def sounds_dir(tmp_path: Path) -> Path:
    """An operator's sounds folder in Asterisk layout holding its own vm-intro."""
    root = tmp_path / "sounds"
    write_wav(root / "en" / "vm-intro.wav", tone(440, 0.5, 8000))
    return root


# --- the generated set -------------------------------------------------------------------


def test_generated_set_has_one_8khz_16bit_mono_wav_per_manifest_entry() -> None:
    entries = manifest()
    assert len(entries) > 150
    for name, words in entries.items():
        path = PROMPTS / "en" / f"{name}.wav"
        assert path.is_file(), f"{name} not generated"
        with wave.open(str(path), "rb") as wav:
            assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (8000, 2, 1)
            frames = wav.readframes(wav.getnframes())
        assert path.stat().st_size == 44 + len(frames), f"{name} has extra header chunks"
        if words.startswith("!silence"):
            assert audioop.max(frames, 2) == 0
        else:
            assert audioop.rms(frames, 2) > 500, f"{name} is silent"
    generated = {
        p.relative_to(PROMPTS / "en").with_suffix("").as_posix()
        for p in PROMPTS.glob("en/**/*.wav")
    }
    assert generated == set(entries)


def test_spoken_prompts_peak_at_about_minus_3_dbfs_and_beep_is_short() -> None:
    for name in ["vm-intro", "vm-goodbye", "digits/7", "digits/mon-11"]:
        with wave.open(str(PROMPTS / "en" / f"{name}.wav"), "rb") as wav:
            peak = audioop.max(wav.readframes(wav.getnframes()), 2)
        assert -3.5 < 20 * math.log10(peak / 32768) < -2.5, name
    with wave.open(str(PROMPTS / "en" / "beep.wav"), "rb") as wav:
        assert 0.25 <= wav.getnframes() / 8000 <= 0.5


def test_manifest_names_the_prompts_voicemail_plays() -> None:
    entries = manifest()
    for name in ["vm-intro", "beep", "auth-thankyou", "vm-goodbye", "vm-youhave", "vm-INBOX"]:
        assert name in entries
    for prefix, numbers in [("digits/h-", range(1, 32)), ("digits/day-", range(7))]:
        assert {f"{prefix}{n}" for n in numbers} <= set(entries)
    assert sum(1 for name in entries if name.startswith("digits/mon-")) == 12
    assert "vm-tooshort" not in entries  # only in `#if 0` code


def test_generator_is_reproducible_and_matches_committed_files(tmp_path: Path) -> None:
    only = [arg for name in SAMPLE_ENTRIES for arg in ("--only", name)]
    for run in ("one", "two"):
        result = run_generator(*only, "--out", str(tmp_path / run))
        assert result.returncode == 0, result.stderr
    for name in SAMPLE_ENTRIES:
        first = (tmp_path / "one" / "en" / f"{name}.wav").read_bytes()
        assert first == (tmp_path / "two" / "en" / f"{name}.wav").read_bytes(), name
        assert first == (PROMPTS / "en" / f"{name}.wav").read_bytes(), f"{name} is stale"


def test_generator_check_reports_a_changed_file(tmp_path: Path) -> None:
    only = [arg for name in SAMPLE_ENTRIES for arg in ("--only", name)]
    assert run_generator(*only, "--out", str(tmp_path)).returncode == 0
    assert run_generator(*only, "--out", str(tmp_path), "--check").returncode == 0
    intro = tmp_path / "en" / "vm-intro.wav"
    intro.write_bytes(intro.read_bytes()[:-2])
    (tmp_path / "en" / "beep.wav").unlink()
    result = run_generator(*only, "--out", str(tmp_path), "--check")
    assert result.returncode == 1
    assert "differs: vm-intro" in result.stdout
    assert "missing: beep" in result.stdout


def test_generator_second_run_writes_nothing_and_removes_extras(tmp_path: Path) -> None:
    shutil.copytree(PROMPTS / "en", tmp_path / "en")
    stale = write_wav(tmp_path / "en" / "vm-retired.wav", tone(440, 0.1, 8000))
    write_wav(tmp_path / "en" / "old" / "x.wav", tone(440, 0.1, 8000))
    result = run_generator("--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"{len(manifest())} prompts" in result.stdout
    assert "0 written, 2 removed" in result.stdout
    assert not stale.exists() and not (tmp_path / "en" / "old").exists()
    result = run_generator("--out", str(tmp_path))
    assert "0 written, 0 removed" in result.stdout
    assert run_generator("--out", str(tmp_path), "--check").returncode == 0


# --- lookup precedence -------------------------------------------------------------------


def test_operator_sounds_win_over_generated_set(sounds_dir: Path) -> None:
    library = SoundLibrary([sounds_dir])
    assert library.find("vm-intro") == sounds_dir / "en" / "vm-intro.wav"
    assert library.load_pcm("vm-intro") == tone(440, 0.5, 8000)


def test_missing_language_falls_back_to_default(sounds_dir: Path) -> None:
    library = SoundLibrary([sounds_dir])
    assert library.find("vm-intro", "fr") == sounds_dir / "en" / "vm-intro.wav"


def test_requested_language_and_its_base_come_before_default(sounds_dir: Path) -> None:
    write_wav(sounds_dir / "fr" / "vm-intro.wav", tone(300, 0.2, 8000))
    library = SoundLibrary([sounds_dir])
    assert library.find("vm-intro", "fr") == sounds_dir / "fr" / "vm-intro.wav"
    assert library.find("vm-intro", "fr_CA") == sounds_dir / "fr" / "vm-intro.wav"


def test_english_is_the_last_fallback_whatever_the_default_language(sounds_dir: Path) -> None:
    # asterisk.conf defaultlanguage=fr with no French sounds: Asterisk still ends with "en".
    library = SoundLibrary([sounds_dir], default_language="fr")
    assert library.find("vm-intro") == sounds_dir / "en" / "vm-intro.wav"
    assert library.find("vm-goodbye") == PROMPTS / "en" / "vm-goodbye.wav"
    assert library.find("digits/7", "de_CH") == PROMPTS / "en" / "digits" / "7.wav"


def debian_layout(root: Path) -> Path:
    """What asterisk-core-sounds-es / -fr install: a voice folder plus alternatives symlinks."""
    for voice, links in [("es_MX_f_Allison", ["es", "es_MX"]), ("fr_CA_f_June", ["fr", "fr_CA"])]:
        write_wav(root / voice / "vm-INBOX.wav", tone(300, 0.1, 8000))
        write_wav(root / voice / "digits" / "1F.wav", tone(310, 0.1, 8000))
        for link in links:
            (root / link).symlink_to(root / voice)
    write_wav(root / "es_MX_f_Allison" / "vm-INBOXs.wav", tone(320, 0.1, 8000))
    return root


def test_debian_spanish_and_french_sounds_are_found_by_language(sounds_dir: Path) -> None:
    library = SoundLibrary([debian_layout(sounds_dir)])
    assert library.find("vm-INBOXs", "es") == sounds_dir / "es" / "vm-INBOXs.wav"
    assert library.find("vm-INBOX", "es_MX") == sounds_dir / "es_MX" / "vm-INBOX.wav"
    assert library.find("digits/1F", "es_ES") == sounds_dir / "es" / "digits" / "1F.wav"
    assert library.find("vm-INBOX", "fr_FR") == sounds_dir / "fr" / "vm-INBOX.wav"
    assert library.find("digits/1F", "fr_CA_f_June") == (
        sounds_dir / "fr_CA_f_June" / "digits" / "1F.wav"
    )
    # Missing in the language: the operator's English, then the generated English set.
    assert library.find("vm-intro", "fr") == sounds_dir / "en" / "vm-intro.wav"
    assert library.find("vm-goodbye", "es") == PROMPTS / "en" / "vm-goodbye.wav"
    with pytest.raises(SoundNotFound):
        library.find("vm-INBOXs", "fr")  # Spanish-only name, no French or English file


@pytest.mark.parametrize("language", ["es", "fr"])
def test_installed_spanish_or_french_core_sounds_are_used(language: str) -> None:
    if not (ASTERISK_SOUNDS / language / "vm-youhave.wav").is_file():
        pytest.skip(f"asterisk-core-sounds-{language} absent")
    library = SoundLibrary([ASTERISK_SOUNDS])
    assert library.find("vm-youhave", language).is_relative_to(ASTERISK_SOUNDS / language)
    assert audioop.rms(library.load_pcm("digits/2", language), 2) > 500


def test_name_only_in_generated_set_is_found_there(sounds_dir: Path) -> None:
    library = SoundLibrary([sounds_dir])
    assert library.find("digits/h-21") == PROMPTS / "en" / "digits" / "h-21.wav"
    assert library.find("vm-goodbye", "de") == PROMPTS / "en" / "vm-goodbye.wav"


def test_first_sounds_dir_wins_and_wav_beats_ulaw(tmp_path: Path, sounds_dir: Path) -> None:
    other = tmp_path / "other"
    (other / "en").mkdir(parents=True)
    (other / "en" / "vm-intro.ulaw").write_bytes(audioop.lin2ulaw(tone(500, 0.1, 8000), 2))
    assert SoundLibrary([other, sounds_dir]).find("vm-intro").name == "vm-intro.ulaw"
    assert SoundLibrary([sounds_dir, other]).find("vm-intro").name == "vm-intro.wav"
    write_wav(other / "en" / "vm-intro.wav", tone(500, 0.1, 8000))
    assert SoundLibrary([other]).find("vm-intro").name == "vm-intro.wav"


def test_unknown_name_raises_sound_not_found(sounds_dir: Path) -> None:
    with pytest.raises(SoundNotFound):
        SoundLibrary([sounds_dir]).find("vm-no-such-prompt")


def test_absolute_path_without_extension(tmp_path: Path) -> None:
    greeting = write_wav(tmp_path / "1234" / "unavail.wav", tone(600, 0.3, 8000))
    library = SoundLibrary([])
    assert library.find(str(tmp_path / "1234" / "unavail")) == greeting
    assert library.load_pcm(str(tmp_path / "1234" / "unavail")) == tone(600, 0.3, 8000)


@pytest.mark.parametrize(
    "name", ["../vm-intro", "digits/../../etc/passwd", "/tmp/../etc/passwd", "..", ""]
)
def test_names_escaping_the_folder_are_rejected(sounds_dir: Path, name: str) -> None:
    with pytest.raises(ValueError):
        SoundLibrary([sounds_dir]).find(name)


def test_language_escaping_the_folder_is_rejected(sounds_dir: Path) -> None:
    with pytest.raises(ValueError):
        SoundLibrary([sounds_dir]).find("vm-intro", "../en")


# --- decoding ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ulaw", "alaw"])
def test_raw_g711_files_decode_to_linear(tmp_path: Path, kind: str) -> None:
    source = write_wav(tmp_path / "src.wav", tone(1000, 0.5, 8000))
    (tmp_path / "en").mkdir()
    sox(str(source), "-t", "ul" if kind == "ulaw" else "al", str(tmp_path / "en" / f"t.{kind}"))
    pcm = SoundLibrary([tmp_path]).load_pcm("t")
    assert len(pcm) == 8000
    error = audioop.rms(audioop.add(pcm, audioop.mul(tone(1000, 0.5, 8000), 2, -1), 2), 2)
    assert error < 10000 * 0.05  # G.711 quantisation noise only


def test_sln_file_is_used_as_is(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "t.sln").write_bytes(tone(800, 0.25, 8000))
    assert SoundLibrary([tmp_path]).load_pcm("t") == tone(800, 0.25, 8000)


def test_stereo_44k_wav_is_mixed_down_and_resampled(tmp_path: Path) -> None:
    left = tone(1000, 1.0, 44100)
    stereo = audioop.add(
        audioop.tostereo(left, 2, 1, 0), audioop.tostereo(b"\0" * len(left), 2, 0, 1), 2
    )
    write_wav(tmp_path / "en" / "t.wav", stereo, rate=44100, channels=2)
    pcm = SoundLibrary([tmp_path]).load_pcm("t")
    assert abs(len(pcm) - 16000) <= 4  # one second at 8 kHz
    assert abs(zero_crossings(pcm) - 2000) <= 10  # still a 1 kHz tone
    assert 4000 < audioop.max(pcm, 2) < 5500  # left at 10000 averaged with a silent right


def test_8bit_and_24bit_wav_made_by_sox_load(tmp_path: Path) -> None:
    source = write_wav(tmp_path / "src.wav", tone(500, 0.5, 16000), rate=16000)
    (tmp_path / "en").mkdir()
    sox(str(source), "-b", "8", str(tmp_path / "en" / "u8.wav"))
    sox(str(source), "-b", "24", "-c", "3", str(tmp_path / "en" / "s24.wav"))
    library = SoundLibrary([tmp_path])
    for name in ["u8", "s24"]:
        pcm = library.load_pcm(name)
        assert abs(len(pcm) - 8000) <= 4, name
        assert abs(zero_crossings(pcm) - 500) <= 6, name
        assert 9000 < audioop.max(pcm, 2) < 11000, name


def test_gsm_wav_gives_a_clear_error(tmp_path: Path) -> None:
    source = write_wav(tmp_path / "src.wav", tone(500, 0.5, 8000))
    (tmp_path / "en").mkdir()
    sox(str(source), "-e", "gsm-full-rate", str(tmp_path / "en" / "t.wav"))
    with pytest.raises(UnsupportedSoundFormat, match="GSM 6.10"):
        SoundLibrary([tmp_path]).load_pcm("t")


def test_decoded_audio_is_cached_until_the_file_changes(sounds_dir: Path) -> None:
    library = SoundLibrary([sounds_dir])
    first = library.load_pcm("vm-intro")
    assert library.load_pcm("vm-intro") is first
    path = write_wav(sounds_dir / "en" / "vm-intro.wav", tone(700, 0.5, 8000))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert library.load_pcm("vm-intro") == tone(700, 0.5, 8000)


def test_cache_is_bounded_by_bytes(tmp_path: Path) -> None:
    for index in range(4):
        write_wav(tmp_path / "en" / f"p{index}.wav", tone(400 + index, 0.5, 8000))
    library = SoundLibrary([tmp_path], cache_bytes=20000)  # room for two 8000-byte prompts
    first = library.load_pcm("p0")
    for index in range(1, 4):
        library.load_pcm(f"p{index}")
    assert library.load_pcm("p0") == first
    assert library.load_pcm("p0") is not first  # evicted and decoded again


@pytest.mark.skipif(not (ASTERISK_SOUNDS / "en").is_dir(), reason="asterisk-core-sounds-en absent")
def test_installed_asterisk_sounds_are_preferred_and_decode() -> None:
    library = SoundLibrary([ASTERISK_SOUNDS])
    assert library.find("vm-intro").is_relative_to(ASTERISK_SOUNDS)
    assert audioop.rms(library.load_pcm("vm-intro"), 2) > 500


def test_copy_of_generated_set_can_serve_as_generated_dir(tmp_path: Path) -> None:
    shutil.copytree(PROMPTS / "en" / "digits", tmp_path / "en" / "digits")
    library = SoundLibrary([], generated_dir=tmp_path)
    assert library.find("digits/5") == tmp_path / "en" / "digits" / "5.wav"
    with pytest.raises(SoundNotFound):
        library.find("vm-intro")
