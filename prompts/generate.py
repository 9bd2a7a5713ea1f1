"""Generate the fallback voice prompts from prompts/manifest-<lang>.tsv.

Each manifest line is `name<TAB>words`. The words are spoken with espeak-ng (fixed voice and
speed), then sox trims the silence around them, resamples to 8000 Hz and normalises the peak to
-3 dBFS. The result is written as prompts/<lang>/<name>.wav (8 kHz, 16-bit signed, mono) with a
canonical 44-byte header, so that a second run gives byte-identical files.

Words starting with `!` are directives instead of speech:
  `!tone HZ SECONDS PEAK_DBFS`  a sine tone (used for `beep`)
  `!silence SECONDS`             digital silence (used for `silence/1`)

Usage:
  python prompts/generate.py [--lang en] [--only NAME ...] [--out DIR] [--check]

`--out DIR` is the prompts root (files go to DIR/<lang>/); it defaults to this folder. Only
files whose content changes are written, and a full run (no `--only`) deletes WAV files the
manifest no longer names, so running it twice changes nothing the second time.
`--check` regenerates into a temporary folder and exits 1 listing files that differ from
DIR/<lang>/, or are missing or extra there.
"""

from __future__ import annotations

import argparse
import math
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parent
SAMPLE_RATE = 8000
PEAK_DBFS = -3.0
# espeak-ng voice per language; speed in words per minute. Changing these changes every file.
VOICES = {"en": "en-us"}
SPEED_WPM = 160
# Silence trimming: cut until 10 ms of signal above -50 dB, at both ends; then keep a short pad
# so that the first syllable is not clipped by a phone's jitter buffer or comfort noise.
TRIM_THRESHOLD = "-50d"
LEAD_PAD_S = 0.05
TAIL_PAD_S = 0.10
FADE_S = 0.01


@dataclass(frozen=True)
class Prompt:
    """One manifest line."""

    name: str
    words: str


def read_manifest(path: Path) -> list[Prompt]:
    """Parse `name<TAB>words` lines; blank lines are ignored, anything else malformed is fatal."""
    prompts: list[Prompt] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        name, sep, words = line.partition("\t")
        if not sep or not name or not words.strip() or ".." in name.split("/"):
            raise ValueError(f"{path}:{number}: expected name<TAB>words, got {line!r}")
        if name in seen:
            raise ValueError(f"{path}:{number}: duplicate prompt {name!r}")
        seen.add(name)
        prompts.append(Prompt(name, words.strip()))
    return prompts


def wav_bytes(pcm: bytes) -> bytes:
    """Wrap 8 kHz 16-bit mono PCM in a plain 44-byte RIFF/WAVE header (no metadata chunks)."""
    fmt = struct.pack("<HHIIHH", 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(pcm)) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tone_pcm(frequency: float, seconds: float, peak_dbfs: float) -> bytes:
    """A sine tone with short linear fades, so it starts and stops without clicks."""
    count = round(seconds * SAMPLE_RATE)
    fade = round(FADE_S * SAMPLE_RATE)
    amplitude = 32767 * 10 ** (peak_dbfs / 20)
    samples = []
    for i in range(count):
        envelope = min(1.0, i / fade, (count - 1 - i) / fade)
        samples.append(
            round(amplitude * envelope * math.sin(2 * math.pi * frequency * i / SAMPLE_RATE))
        )
    return struct.pack(f"<{count}h", *samples)


def speech_pcm(words: str, voice: str, workdir: Path) -> bytes:
    """Speak `words` with espeak-ng and let sox trim, resample and normalise them."""
    spoken = workdir / "espeak.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(SPEED_WPM), "-w", str(spoken), "--", words],
        check=True,
        capture_output=True,
    )
    # -D: no dither, which would add random noise and break reproducibility.
    result = subprocess.run(
        ["sox", "-D", str(spoken)]
        + ["-t", "raw", "-e", "signed-integer", "-b", "16", "-c", "1", "-L", "-"]
        + ["silence", "1", "0.01", TRIM_THRESHOLD, "reverse"]
        + ["silence", "1", "0.01", TRIM_THRESHOLD, "reverse"]
        + ["rate", str(SAMPLE_RATE), "norm", str(PEAK_DBFS)]
        + ["pad", str(LEAD_PAD_S), str(TAIL_PAD_S)],
        check=True,
        capture_output=True,
    )
    return result.stdout


def render(prompt: Prompt, voice: str, workdir: Path) -> bytes:
    """Return the WAV file content for one manifest entry."""
    if prompt.words.startswith("!"):
        kind, *args = prompt.words[1:].split()
        if kind == "tone" and len(args) == 3:
            return wav_bytes(tone_pcm(float(args[0]), float(args[1]), float(args[2])))
        if kind == "silence" and len(args) == 1:
            return wav_bytes(bytes(2 * round(float(args[0]) * SAMPLE_RATE)))
        raise ValueError(f"{prompt.name}: unknown directive {prompt.words!r}")
    return wav_bytes(speech_pcm(prompt.words, voice, workdir))


def generate(prompts: list[Prompt], voice: str, lang_dir: Path) -> list[str]:
    """Write every prompt as lang_dir/<name>.wav, creating subfolders; a file that already has
    the right content is left untouched (so a second run changes nothing, not even mtimes).
    Returns the names written."""
    written = []
    with tempfile.TemporaryDirectory(prefix="prompt-gen-") as tmp:
        for prompt in prompts:
            target = lang_dir / f"{prompt.name}.wav"
            content = render(prompt, voice, Path(tmp))
            if target.is_file() and target.read_bytes() == content:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            written.append(prompt.name)
    return written


def prune(prompts: list[Prompt], lang_dir: Path) -> list[str]:
    """Delete WAV files under lang_dir that no manifest line names, and emptied folders."""
    wanted = {f"{prompt.name}.wav" for prompt in prompts}
    removed = []
    for path in sorted(lang_dir.rglob("*.wav")):
        if path.relative_to(lang_dir).as_posix() not in wanted:
            path.unlink()
            removed.append(path.relative_to(lang_dir).with_suffix("").as_posix())
    for folder in sorted((p for p in lang_dir.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    return removed


def compare(prompts: list[Prompt], expected_dir: Path, actual_dir: Path, full: bool) -> list[str]:
    """List differences between a fresh generation and the committed files."""
    problems = []
    for prompt in prompts:
        fresh = (actual_dir / f"{prompt.name}.wav").read_bytes()
        committed = expected_dir / f"{prompt.name}.wav"
        if not committed.is_file():
            problems.append(f"missing: {prompt.name}")
        elif committed.read_bytes() != fresh:
            problems.append(f"differs: {prompt.name}")
    if full:
        wanted = {f"{prompt.name}.wav" for prompt in prompts}
        for path in sorted(expected_dir.rglob("*.wav")):
            if path.relative_to(expected_dir).as_posix() not in wanted:
                problems.append(f"extra: {path.relative_to(expected_dir).with_suffix('')}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lang", default="en", help="language of the manifest (default en)")
    parser.add_argument("--only", action="append", metavar="NAME", help="only this prompt")
    parser.add_argument("--out", type=Path, default=PROMPTS_DIR, help="prompts root folder")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)

    prompts = read_manifest(PROMPTS_DIR / f"manifest-{args.lang}.tsv")
    if args.only:
        unknown = set(args.only) - {prompt.name for prompt in prompts}
        if unknown:
            parser.error(f"not in the manifest: {', '.join(sorted(unknown))}")
        prompts = [prompt for prompt in prompts if prompt.name in args.only]
    voice = VOICES.get(args.lang, args.lang)
    lang_dir = args.out / args.lang

    if not args.check:
        written = generate(prompts, voice, lang_dir)
        removed = [] if args.only else prune(prompts, lang_dir)
        total = sum((lang_dir / f"{prompt.name}.wav").stat().st_size for prompt in prompts)
        print(
            f"{len(prompts)} prompts in {lang_dir} ({total} bytes): {len(written)} written, "
            f"{len(removed)} removed"
        )
        return 0

    with tempfile.TemporaryDirectory(prefix="prompt-check-") as tmp:
        generate(prompts, voice, Path(tmp))
        problems = compare(prompts, lang_dir, Path(tmp), full=not args.only)
    for problem in problems:
        print(problem)
    if problems:
        print(
            f"{len(problems)} prompt file(s) out of date; run prompts/generate.py", file=sys.stderr
        )
        return 1
    print(f"{len(prompts)} prompts in {lang_dir} match the manifest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
