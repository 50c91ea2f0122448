"""Mutated audio files for fuzzing the decoder: seeds of every format, mutations, and the oracle.

Shared by the in-suite fuzz test (tests/test_audio_fuzz.py, a few hundred cases) and the long run
(``make fuzz``, benchmarks/fuzz.py). A case is the bytes of a small generated file of one format,
changed by one to three mutations: truncation, byte flips in the header or anywhere, extreme
values in size, rate and channel fields, splices of two formats, inserted or zeroed ranges, and
overwritten float exponents. Everything is drawn from a seeded generator, so case ``i`` of seed
``s`` is the same file on every run.

The oracle (:func:`check`) is what "named" means: :func:`adares.load` either returns finite
float32 samples or raises :class:`~adares.errors.AudioDecodeError` whose message is one line
naming the path; anything else (another exception, NaN samples) is a crash.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

SEED_FORMATS: dict[str, tuple[str, str, str, int, int]] = {
    # name: (libsndfile format, subtype, suffix, rate, channels)
    "wav16": ("WAV", "PCM_16", ".wav", 16000, 1),
    "wavfloat": ("WAV", "FLOAT", ".wav", 16000, 1),
    "wav24stereo": ("WAV", "PCM_24", ".wav", 22050, 2),
    "flac": ("FLAC", "PCM_16", ".flac", 16000, 1),
    "vorbis": ("OGG", "VORBIS", ".ogg", 16000, 1),
    "opus": ("OGG", "OPUS", ".opus", 48000, 1),
    "aiff": ("AIFF", "PCM_16", ".aiff", 16000, 2),
    "mp3": ("MP3", "MPEG_LAYER_III", ".mp3", 16000, 1),
}

EXTREME_VALUES = (0, 1, 2, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 30000, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def seed_files(seconds: float = 0.25) -> dict[str, bytes]:
    """One small valid file per format this libsndfile can write, as bytes (deterministic)."""
    seeds: dict[str, bytes] = {}
    for name, (fmt, subtype, _, rate, channels) in SEED_FORMATS.items():
        if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
            continue
        t = np.arange(int(seconds * rate)) / rate
        tone = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3100 * t)
        samples = np.stack([tone * (c + 1) / channels for c in range(channels)], axis=1).astype(np.float32)
        buffer = io.BytesIO()
        try:
            sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
        except (sf.LibsndfileError, RuntimeError, TypeError):  # an encoder this build lacks
            continue
        seeds[name] = buffer.getvalue()
    return seeds


# --------------------------------------------------------------------------------------------
# mutations: each takes (data, rng, seeds) and returns new bytes


def _truncate(data: bytes, rng: np.random.Generator, seeds: dict[str, bytes]) -> bytes:
    # half the cuts fall in the first 256 bytes, where the headers are
    limit = min(len(data), 256) if rng.random() < 0.5 else len(data)
    return data[: int(rng.integers(0, max(1, limit)))]


def _flip(data: bytes, rng: np.random.Generator, *, region: int) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        index = int(rng.integers(0, min(len(out), region)))
        out[index] ^= int(rng.integers(1, 256))
    return bytes(out)


def _flip_header(data: bytes, rng: np.random.Generator, seeds: dict[str, bytes]) -> bytes:
    return _flip(data, rng, region=128)


def _flip_anywhere(data: bytes, rng: np.random.Generator, seeds: dict[str, bytes]) -> bytes:
    return _flip(data, rng, region=len(data))


def _field_offsets(data: bytes) -> list[tuple[int, int, str]]:
    """(offset, width, byte order) of the size, rate and channel fields of a WAV or AIFF header."""
    fields: list[tuple[int, int, str]] = []
    if data[:4] == b"RIFF":
        fields.append((4, 4, "<"))
        fmt = data.find(b"fmt ")
        if fmt >= 0:
            base = fmt + 8
            fields += [(fmt + 4, 4, "<"), (base + 2, 2, "<"), (base + 4, 4, "<"), (base + 8, 4, "<")]
            fields += [(base + 12, 2, "<"), (base + 14, 2, "<")]
        chunk = data.find(b"data")
        if chunk >= 0:
            fields.append((chunk + 4, 4, "<"))
    elif data[:4] == b"FORM":
        fields.append((4, 4, ">"))
        comm = data.find(b"COMM")
        if comm >= 0:
            base = comm + 8
            fields += [(comm + 4, 4, ">"), (base, 2, ">"), (base + 2, 4, ">"), (base + 6, 2, ">"), (base + 8, 2, ">")]
        ssnd = data.find(b"SSND")
        if ssnd >= 0:
            fields += [(ssnd + 4, 4, ">"), (ssnd + 8, 4, ">")]
    return [field for field in fields if field[0] + field[1] <= len(data)]


def _extreme_field(data: bytes, rng: np.random.Generator, seeds: dict[str, bytes]) -> bytes:
    fields = _field_offsets(data)
    if fields and rng.random() < 0.8:
        offset, width, order = fields[int(rng.integers(0, len(fields)))]
    else:  # any aligned field near the start (FLAC STREAMINFO, Ogg pages, MP3 frame headers)
        width, order = (2, 4)[int(rng.integers(0, 2))], "<>"[int(rng.integers(0, 2))]
        if len(data) < width:
            return data
        offset = int(rng.integers(0, min(len(data), 64) - width + 1))
    value = EXTREME_VALUES[int(rng.integers(0, len(EXTREME_VALUES)))] & ((1 << (8 * width)) - 1)
    packed = struct.pack(order + ("H" if width == 2 else "I"), value)
    return data[:offset] + packed + data[offset + width :]


def _splice(data: bytes, rng: np.random.Generator, seeds: dict[str, bytes]) -> bytes:
    other = list(seeds.values())[int(rng.integers(0, len(seeds)))]
    cut = int(rng.integers(0, len(data) + 1))
    start = int(rng.integers(0, len(other) + 1))
    return data[:cut] + other[start:]


def _insert(data: bytes, rng: np.random.Generator, seeds: dict[str, bytes]) -> bytes:
    at = int(rng.integers(0, len(data) + 1))
    if rng.random() < 0.5:
        piece = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    else:  # a repeated slice of the file itself
        start = int(rng.integers(0, max(1, len(data))))
        piece = data[start : start + int(rng.integers(1, 512))]
    return data[:at] + piece + data[at:]


def _zero_range(data: bytes, rng: np.random.Generator, seeds: dict[str, bytes]) -> bytes:
    if not data:
        return data
    start = int(rng.integers(0, len(data)))
    stop = min(len(data), start + int(rng.integers(1, 256)))
    return data[:start] + bytes(stop - start) + data[stop:]


def _float_exponents(data: bytes, rng: np.random.Generator, seeds: dict[str, bytes]) -> bytes:
    """Overwrite the high byte of a few 4-byte samples past the header: huge, tiny, Inf or NaN floats."""
    if len(data) < 128:
        return _flip_anywhere(data, rng, seeds)
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        index = 64 + 4 * int(rng.integers(0, (len(out) - 64) // 4)) + 3
        out[index] = int(rng.integers(0, 256))
    return bytes(out)


MUTATIONS: dict[str, Callable[[bytes, np.random.Generator, dict[str, bytes]], bytes]] = {
    "truncate": _truncate,
    "flip_header": _flip_header,
    "flip_anywhere": _flip_anywhere,
    "extreme_field": _extreme_field,
    "splice": _splice,
    "insert": _insert,
    "zero_range": _zero_range,
    "float_exponents": _float_exponents,
}


@dataclass(frozen=True)
class Case:
    """One fuzz input: ``data`` made from seed ``seed_name`` by ``mutations`` (in order)."""

    index: int
    seed_name: str
    mutations: tuple[str, ...]
    data: bytes

    @property
    def suffix(self) -> str:
        return SEED_FORMATS[self.seed_name][2]

    @property
    def label(self) -> str:
        return f"{self.index}:{self.seed_name}:{'+'.join(self.mutations)}"


def cases(count: int, *, seed: int = 0, seeds: dict[str, bytes] | None = None, start: int = 0) -> Iterator[Case]:
    """Cases ``start .. start + count - 1`` of the sequence drawn from ``seed``; each case is
    determined by ``(seed, index)`` alone, so any one can be regenerated on its own."""
    seeds = seed_files() if seeds is None else seeds
    names = sorted(seeds)
    mutation_names = sorted(MUTATIONS)
    for index in range(start, start + count):
        rng = np.random.default_rng([seed, index])
        seed_name = names[int(rng.integers(0, len(names)))]
        data = seeds[seed_name]
        depth = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
        applied = []
        for _ in range(depth):
            name = mutation_names[int(rng.integers(0, len(mutation_names)))]
            data = MUTATIONS[name](data, rng, seeds)
            applied.append(name)
        yield Case(index, seed_name, tuple(applied), data)


# --------------------------------------------------------------------------------------------
# the oracle

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?", re.IGNORECASE)


def reason_class(reason: str) -> str:
    """A failure reason with its numbers replaced by ``#``: files failing for the same cause share it."""
    return _NUMBER.sub("#", reason)


@dataclass(frozen=True)
class Outcome:
    """What :func:`check` saw: ``kind`` is ``"ok"``, ``"named"`` or ``"crash"``."""

    kind: str
    detail: str  # ok: samples and rate; named: the reason's class; crash: exception type and message
    message: str = ""


def check(path: str | Path, *, sr: int | None = 16000) -> Outcome:
    """Load ``path`` with :func:`adares.load` and judge the result.

    ``ok``: finite float32 samples of shape ``(N,)``, ``N > 0``. ``named``: an
    :class:`~adares.errors.AudioDecodeError` whose message is one line and names the path.
    ``crash``: anything else.
    """
    from adares.audio import load
    from adares.errors import AudioDecodeError

    try:
        samples, rate = load(path, sr=sr)
    except AudioDecodeError as error:
        message = str(error)
        if "\n" in message or str(path) not in message or not error.reason:
            return Outcome("crash", f"badly formed AudioDecodeError: {message!r}", message)
        return Outcome("named", reason_class(error.reason), message)
    except Exception as error:  # noqa: BLE001 - the oracle reports every other exception as a crash
        return Outcome("crash", f"{type(error).__name__}: {' '.join(str(error).split())}", repr(error))
    if not isinstance(samples, np.ndarray) or samples.dtype != np.float32 or samples.ndim != 1 or not len(samples):
        return Outcome("crash", f"bad samples: {type(samples).__name__} {getattr(samples, 'shape', None)}")
    if not np.isfinite(samples).all():
        return Outcome("crash", "non-finite samples returned")
    return Outcome("ok", f"{len(samples)} samples at {rate} Hz")
