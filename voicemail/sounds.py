"""Finding prompt files the way Asterisk does, and decoding them to 8 kHz linear PCM.

Real sound folders (Asterisk layout, `<dir>/<lang>/<name>.<ext>`) win over the synthetic set
generated into `prompts/<lang>/<name>.wav`, so an operator's Asterisk sounds or custom
recordings replace the espeak-ng voice without configuration. Everything played to a caller
goes through `SoundLibrary.load_pcm`, which returns one format only: 8000 Hz, 16-bit signed
little-endian, mono (the RTP layer encodes that to G.711). Assumes a little-endian host, as
audioop works in native byte order.
"""

from __future__ import annotations

import re
import struct
import threading
import warnings
from array import array
from collections import OrderedDict
from pathlib import Path

with warnings.catch_warnings():
    # Deprecated since 3.11 and removed in 3.13 (then provided by audioop-lts); chosen in stack.md.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SAMPLE_RATE = 8000
EXTENSIONS = (".wav", ".ulaw", ".alaw", ".sln")
GENERATED_DIR = Path(__file__).resolve().parent.parent / "prompts"
DEFAULT_CACHE_BYTES = 32 * 1024 * 1024
FALLBACK_LANGUAGE = "en"  # tried last for every prompt, as Asterisk's DEFAULT_LANGUAGE

_LANGUAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_ALAW = 0x0006
_WAVE_FORMAT_MULAW = 0x0007
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_CODEC_NAMES = {
    0x0002: "Microsoft ADPCM",
    0x0003: "IEEE float",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0040: "G.721 ADPCM",
    0x0055: "MPEG layer 3",
}


class SoundNotFound(LookupError):
    """No file exists for a prompt name in any sounds folder, language or extension."""


class UnsupportedSoundFormat(ValueError):
    """The file exists but its encoding cannot be decoded to linear PCM here."""


class SoundLibrary:
    """Resolves prompt names to files and serves their audio as 8 kHz 16-bit mono PCM."""

    def __init__(
        self,
        sounds_dirs: list[Path],
        generated_dir: Path = GENERATED_DIR,
        default_language: str = "en",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.sounds_dirs = [Path(d) for d in sounds_dirs]
        self.generated_dir = Path(generated_dir)
        self.default_language = _checked_language(default_language)
        self._cache = _PcmCache(cache_bytes)

    def find(self, name: str, language: str | None = None) -> Path:
        """Return the file Asterisk would play for `name` in `language`.

        Order: each sounds folder, then the generated set; within each, the language (or the
        default one when None), the language without its `_` suffixes (`fr_CA` -> `fr`), no
        language, then English; within each of those, `.wav`, `.ulaw`, `.alaw`, `.sln`. An
        absolute `name` is tried with the language folder inserted before its last component,
        then as is.
        """
        parts = checked_sound_name(name)
        languages = _language_chain(language, self.default_language)
        if name.startswith("/"):
            absolute = Path(name)
            bases = [
                absolute.parent / lang / absolute.name if lang else absolute for lang in languages
            ]
        else:
            roots = [*self.sounds_dirs, self.generated_dir]
            bases = [root.joinpath(lang, *parts) for root in roots for lang in languages]
        for base in bases:
            for extension in EXTENSIONS:
                candidate = base.with_name(base.name + extension)
                if candidate.is_file():
                    return candidate
        raise SoundNotFound(f"no sound file for {name!r} (language {languages[0]!r})")

    def load_pcm(self, name: str, language: str | None = None) -> bytes:
        """Return the prompt as 8 kHz 16-bit signed little-endian mono PCM.

        Decoded audio is cached per file, keyed also by modification time and size, so a
        re-recorded greeting at the same path is read again.
        """
        path = self.find(name, language)
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        pcm = self._cache.get(key)
        if pcm is None:
            pcm = decode_file(path)
            self._cache.put(key, pcm)
        return pcm


def decode_file(path: Path) -> bytes:
    """Decode a .wav, .ulaw, .alaw or .sln file to 8 kHz 16-bit mono PCM."""
    data = path.read_bytes()
    suffix = path.suffix.lower()
    if suffix == ".wav":
        return _decode_wav(data, path)
    if suffix == ".ulaw":
        return audioop.ulaw2lin(data, 2)
    if suffix == ".alaw":
        return audioop.alaw2lin(data, 2)
    if suffix == ".sln":
        return data[: len(data) - len(data) % 2]
    raise UnsupportedSoundFormat(f"{path}: unknown sound file extension {suffix!r}")


def _decode_wav(data: bytes, path: Path) -> bytes:
    """Read a RIFF/WAVE file holding PCM (8-32 bit), A-law or u-law, at any rate and channels."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise UnsupportedSoundFormat(f"{path}: not a RIFF/WAVE file")
    fmt = samples = None
    position = 12
    while position + 8 <= len(data) and samples is None:
        chunk_id = data[position : position + 4]
        (size,) = struct.unpack_from("<I", data, position + 4)
        body = data[position + 8 : position + 8 + size]  # a streamed header may overstate size
        if chunk_id == b"fmt ":
            fmt = body
        elif chunk_id == b"data":
            samples = body
        position += 8 + size + (size & 1)
    if fmt is None or len(fmt) < 16 or samples is None:
        raise UnsupportedSoundFormat(f"{path}: WAV file without a fmt or data chunk")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _WAVE_FORMAT_EXTENSIBLE and len(fmt) >= 26:
        (tag,) = struct.unpack_from("<H", fmt, 24)  # first two bytes of the SubFormat GUID
    if channels < 1 or rate < 1:
        raise UnsupportedSoundFormat(f"{path}: WAV header has {channels} channels at {rate} Hz")

    if tag == _WAVE_FORMAT_PCM and 1 <= bits <= 32:
        width = (bits + 7) // 8
        samples = samples[: len(samples) - len(samples) % (width * channels)]
        if width == 1:
            samples = audioop.bias(samples, 1, -128)  # 8-bit WAV is unsigned
        if width != 2:
            samples = audioop.lin2lin(samples, width, 2)
    elif tag in (_WAVE_FORMAT_ALAW, _WAVE_FORMAT_MULAW) and bits == 8:
        samples = samples[: len(samples) - len(samples) % channels]
        decode = audioop.alaw2lin if tag == _WAVE_FORMAT_ALAW else audioop.ulaw2lin
        samples = decode(samples, 2)
    else:
        if tag == _WAVE_FORMAT_PCM:
            codec = f"{bits}-bit PCM"
        else:
            codec = _CODEC_NAMES.get(tag, f"with format tag {tag:#06x}")
        raise UnsupportedSoundFormat(
            f"{path}: WAV encoding {codec} is not supported; convert it to PCM, "
            f"e.g. sox in.wav -r 8000 -b 16 -c 1 -e signed-integer out.wav"
        )

    if channels == 2:
        samples = audioop.tomono(samples, 2, 0.5, 0.5)
    elif channels > 2:
        interleaved = array("h", samples)
        samples = array(
            "h",
            (
                sum(interleaved[i : i + channels]) // channels
                for i in range(0, len(interleaved), channels)
            ),
        ).tobytes()
    if rate != SAMPLE_RATE:
        samples, _ = audioop.ratecv(samples, 2, 1, rate, SAMPLE_RATE, None)
    return samples


def checked_sound_name(name: str) -> list[str]:
    """Split a prompt name into path parts, refusing anything that climbs out of its folder."""
    if not name or "\0" in name or "\\" in name:
        raise ValueError(f"invalid sound name {name!r}")
    parts = [part for part in name.split("/") if part and part != "."]
    if not parts or ".." in parts:
        raise ValueError(f"sound name {name!r} must not contain '..' or be empty")
    return parts


def _checked_language(language: str) -> str:
    """Languages become folder names, so only plain tags like `en` or `en_US_f_Allison` pass."""
    if not _LANGUAGE_RE.fullmatch(language):
        raise ValueError(f"invalid sound language {language!r}")
    return language


def _language_chain(language: str | None, default: str) -> list[str]:
    """Asterisk's fileexists_core order: `fr_CA_x`, `fr_CA`, `fr`, no language (""), then
    English (file.c's DEFAULT_LANGUAGE, fixed at "en" whatever asterisk.conf says).

    No language means the configured default one (asterisk.conf defaultlanguage), which a
    channel gets when nothing sets its language.
    """
    chain: list[str] = []
    current = _checked_language(language or default)
    while current:
        chain.append(current)
        current = current.rpartition("_")[0]
    chain.append("")
    if FALLBACK_LANGUAGE not in chain:
        chain.append(FALLBACK_LANGUAGE)
    return chain


class _PcmCache:
    """A least-recently-used map of decoded audio, bounded by total bytes."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, int]) -> bytes | None:
        with self._lock:
            pcm = self._items.get(key)
            if pcm is not None:
                self._items.move_to_end(key)
            return pcm

    def put(self, key: tuple[str, int, int], pcm: bytes) -> None:
        if len(pcm) > self._max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self._bytes -= len(old) if old is not None else 0
            self._items[key] = pcm
            self._bytes += len(pcm)
            while self._bytes > self._max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= len(evicted)
