"""Decode audio files into float32 waveforms at the rate the front end expects.

Decoding is libsndfile (through :mod:`soundfile`): WAV (PCM 8/16/24/32-bit and float), FLAC,
Ogg Vorbis/Opus, MP3, AIFF and the rest of what the installed libsndfile reads. Resampling is soxr
at high quality, and only when the file's rate differs from the requested one.

Files are read in blocks and resampled as a stream, so a long file at 48 kHz never exists in memory
at its original rate: peak memory is the output plus one block.

Every failure — a missing file, an empty file, a truncated one, something that is not audio, a file
with no samples, with non-finite samples or with samples out of range — raises
:class:`~adares.errors.AudioDecodeError` with the path and the reason in one line, ready for a failure
report.

Float files may hold any float32 value. Audio belongs in [-1, 1], but float files written at an
integer PCM scale (up to 2^31) are common enough to accept: every computation after decoding stays
finite and exact to float rounding there. Beyond :data:`MAX_ABS_SAMPLE` a sample is corruption (one
flipped exponent bit in float data gives values near 1e37), and float32 mel power would overflow.
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from adares.errors import AudioDecodeError, ParameterError
from adares.extensions import AUDIO_EXTENSIONS

__all__ = [
    "AudioInfo",
    "info",
    "load",
    "load_or_stream",
    "stream",
    "AUDIO_EXTENSIONS",
    "MAX_ABS_SAMPLE",
    "MIN_SAMPLE_RATE",
    "MAX_SAMPLE_RATE",
    "out_of_range_reason",
]

_BLOCK_FRAMES = 1 << 18  # 262,144 frames: 5.5 s at 48 kHz, a few MB per block
# Samples (frames x channels) per block at most: a header declaring hundreds of channels must not
# make one read allocate gigabytes. Up to 8 channels the block is _BLOCK_FRAMES frames.
_BLOCK_SAMPLES = 8 * _BLOCK_FRAMES

MIN_SAMPLE_RATE = 1000
"""Lowest file rate accepted, in Hz. A corrupt header can declare 1 Hz, and resampling that file to
16 kHz would turn each byte into thousands of samples (a 16 kB file into 256 MB)."""
MAX_SAMPLE_RATE = 1_000_000
"""Highest file rate accepted, in Hz (above the 768 kHz of the fastest audio converters)."""

MAX_ABS_SAMPLE = 2.0**31
"""Largest sample magnitude adares accepts: the 32-bit PCM scale, the largest integer scale a float
file is written at. Up to it, the mel power of any front end stays far below float32's limit (3.4e38)."""


def out_of_range_reason(peak: float, *, from_seconds: float | None = None, limit: float = MAX_ABS_SAMPLE) -> str:
    """The one-line reason for samples beyond ``limit`` (shared with the front end).

    Parameters
    ----------
    peak : float
        The largest sample magnitude seen.
    from_seconds : float, optional
        Where the first such sample is, when known.
    limit : float
        The largest magnitude accepted, a power of two.

    Returns
    -------
    str
    """
    where = "" if from_seconds is None else f" from {from_seconds:.3f} s"
    return (
        f"samples out of range{where}: max |x| = {peak:.2g}; float audio is expected in [-1, 1] "
        f"(at most 2^{math.log2(limit):g} is accepted)"
    )


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, read without decoding the samples.

    Attributes
    ----------
    path : str
        The file.
    sr : int
        Sampling rate in Hz.
    frames : int
        Number of samples per channel the header declares.
    channels : int
        Number of channels.
    format : str
        Container, e.g. ``"WAV"``, ``"FLAC"``.
    subtype : str
        Sample encoding, e.g. ``"PCM_16"``.
    """

    path: str
    sr: int
    frames: int
    channels: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Declared duration in seconds."""
        return self.frames / self.sr if self.sr else 0.0


def info(path: str | os.PathLike[str]) -> AudioInfo:
    """Read a file's header: rate, length, channels and format.

    Parameters
    ----------
    path : str or os.PathLike
        The audio file.

    Returns
    -------
    AudioInfo

    Raises
    ------
    AudioDecodeError
        If the file is missing, empty or not an audio file libsndfile recognises.
    """
    try:
        with _mpeg_notes_silenced(path):
            header = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as error:
        raise _open_failure(path, error) from None
    return AudioInfo(
        path=str(path),
        sr=int(header.samplerate),
        frames=int(header.frames),
        channels=int(header.channels),
        format=str(header.format),
        subtype=str(header.subtype),
    )


def load(
    path: str | os.PathLike[str],
    *,
    sr: int | None = 16000,
    mono: bool = True,
    channel: int | None = None,
    start: float = 0.0,
    end: float | None = None,
) -> tuple[np.ndarray, int]:
    """Decode an audio file, or a segment of it, to float32 samples, resampled to ``sr``.

    Parameters
    ----------
    path : str or os.PathLike
        The audio file.
    sr : int or None
        Target sampling rate in Hz; ``None`` keeps the file's own rate. Resampling (soxr, high
        quality) happens only when the rates differ.
    mono : bool
        Mix all channels down to one by averaging them (the default). With ``mono=False`` every
        channel is kept and the result is channel-major.
    channel : int or None
        Take only this channel (0-based) instead of mixing down. Overrides ``mono``.
    start, end : float
        The segment to decode, in seconds of the recording (``end`` None: to its end). The file
        is seeked to ``start``: what lies before is never decoded.

    Returns
    -------
    samples : np.ndarray [shape=(N,) or (C, N)], float32
        The waveform, in [-1, 1] for PCM sources; ``(N,)`` when ``mono`` or ``channel`` is set.
    sr : int
        The rate of ``samples``.

    Raises
    ------
    AudioDecodeError
        If the file cannot be decoded: missing, empty, not audio, truncated, no samples, non-finite
        samples, samples beyond :data:`MAX_ABS_SAMPLE` in magnitude, ``channel`` out of range for
        this file, or a segment beyond its end. The message names the path and reason.
    ParameterError
        If ``sr``, ``channel``, ``start`` or ``end`` is not a valid value at all.

    Examples
    --------
    >>> samples, rate = load("speech.flac", sr=16000)  # doctest: +SKIP
    >>> samples.dtype, samples.ndim
    (dtype('float32'), 1)
    """
    if sr is not None and (isinstance(sr, bool) or not isinstance(sr, int) or sr <= 0):
        raise ParameterError(f"sr must be a positive integer in Hz or None, got {sr!r}")
    _check_channel(channel)
    segment = _check_segment(start, end)
    with _opened(path) as handle:
        return _decode(handle, path=path, sr=sr, mono=mono, channel=channel, segment=segment)


def load_or_stream(
    path: str | os.PathLike[str],
    *,
    sr: int,
    channel: int | None = None,
    longer_than: float,
    start: float = 0.0,
    end: float | None = None,
) -> np.ndarray | tuple[int, Callable[[], Iterator[np.ndarray]]]:
    """The mono samples of :func:`load`, or for a file whose header declares more than ``longer_than``
    seconds, the blocks of :func:`stream`: one decision, and one opening of a short file.

    Returns
    -------
    np.ndarray [shape=(N,)], float32, or (num_samples, chunks) as :func:`stream` returns them
    """
    _check_rate(sr)
    _check_channel(channel)
    segment = _check_segment(start, end)
    with _opened(path) as handle:
        length = (handle.frames if end is None else round(end * handle.samplerate)) - round(start * handle.samplerate)
        if length <= longer_than * handle.samplerate:
            return _decode(handle, path=path, sr=sr, mono=True, channel=channel, segment=segment)[0]
    return stream(path, sr=sr, channel=channel, start=start, end=end)


def _check_rate(sr: int) -> None:
    if isinstance(sr, bool) or not isinstance(sr, int) or sr <= 0:
        raise ParameterError(f"sr must be a positive integer in Hz, got {sr!r}")


def _check_channel(channel: int | None) -> None:
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int) or channel < 0):
        raise ParameterError(f"channel must be a non-negative integer or None, got {channel!r}")


def _check_segment(start: float, end: float | None) -> tuple[float, float | None]:
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not 0.0 <= start < math.inf:
        raise ParameterError(f"start must be a finite, non-negative number of seconds, got {start!r}")
    if end is not None and (isinstance(end, bool) or not isinstance(end, (int, float)) or not start < end < math.inf):
        raise ParameterError(f"end must be a finite number of seconds after start ({start:g}), got {end!r}")
    return float(start), None if end is None else float(end)


@contextlib.contextmanager
def _opened(path: str | os.PathLike[str]) -> Iterator[sf.SoundFile]:
    """The open file; libsndfile's failures, while opening or reading, become AudioDecodeError."""
    try:
        with _mpeg_notes_silenced(path), sf.SoundFile(str(path)) as handle:
            yield handle
    except AudioDecodeError:
        raise
    except (sf.LibsndfileError, RuntimeError) as error:
        raise _open_failure(path, error) from None


def _decode(
    handle: sf.SoundFile,
    *,
    path: str | os.PathLike[str],
    sr: int | None,
    mono: bool,
    channel: int | None,
    segment: tuple[float, float | None] = (0.0, None),
) -> tuple[np.ndarray, int]:
    target_sr = int(handle.samplerate) if sr is None else sr
    keep_channels = channel is None and not mono
    pieces = list(_blocks(handle, path=path, sr=sr, mono=mono, channel=channel, segment=segment))
    samples = np.concatenate(pieces, axis=0) if len(pieces) > 1 else pieces[0]
    samples = np.ascontiguousarray(samples.T if keep_channels else samples[:, 0], dtype=np.float32)
    return samples, target_sr


def _check_header(handle: sf.SoundFile, *, path: str | os.PathLike[str], channel: int | None) -> None:
    """Refuse what the header alone shows: a missing channel, an implausible rate, truncation, no frames."""
    file_sr, channels, declared = int(handle.samplerate), int(handle.channels), int(handle.frames)
    if channel is not None and channel >= channels:
        raise AudioDecodeError(path, f"has {channels} channel(s), channel {channel} was requested")
    if not MIN_SAMPLE_RATE <= file_sr <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(
            path,
            f"implausible sample rate in the header: {file_sr} Hz (1 kHz to 1 MHz is accepted); "
            "the header is probably corrupt",
        )
    _check_wav_truncation(path, file_sr=file_sr)
    if declared == 0:
        raise AudioDecodeError(path, "no audio samples (0 frames)")


def _segment_frames(
    segment: tuple[float, float | None], *, file_sr: int, declared: int, path: str | os.PathLike[str]
) -> tuple[int, int]:
    """The frames ``[first, stop)`` at the file's rate that a (start, end) segment in seconds covers."""
    start, end = segment
    first = round(start * file_sr)
    stop = declared if end is None else round(end * file_sr)
    length = declared / file_sr
    if first >= declared:
        raise AudioDecodeError(path, f"segment starts at {start:.3f} s, after the recording's end ({length:.3f} s)")
    if stop > declared:
        raise AudioDecodeError(path, f"segment ends at {end:.3f} s, after the recording's end ({length:.3f} s)")
    if stop <= first:
        raise AudioDecodeError(path, f"segment {start:.3f}-{end:.3f} s holds no frame at {file_sr} Hz")
    return first, stop


def _blocks(
    handle: sf.SoundFile,
    *,
    path: str | os.PathLike[str],
    sr: int | None,
    mono: bool,
    channel: int | None,
    block_frames: int = _BLOCK_FRAMES,
    segment: tuple[float, float | None] = (0.0, None),
) -> Iterator[np.ndarray]:
    """Decode ``handle`` block by block: ``[n, C]`` float32 pieces at ``sr`` (C = 1 unless every
    channel is kept), every check of :func:`load` included. The checks that need the whole file
    (truncation, no samples) run before the last piece is given out. A ``segment`` (start, end)
    in seconds is reached by seeking, never by decoding what lies before it."""
    _check_header(handle, path=path, channel=channel)
    file_sr, channels, declared = int(handle.samplerate), int(handle.channels), int(handle.frames)
    block_frames = max(1, min(block_frames, _BLOCK_SAMPLES // channels))
    first, stop = _segment_frames(segment, file_sr=file_sr, declared=declared, path=path)
    if first:
        try:
            handle.seek(first)
        except (sf.LibsndfileError, RuntimeError) as error:
            raise AudioDecodeError(
                path, f"cannot seek to {first / file_sr:.3f} s ({_libsndfile_reason(error)})"
            ) from None
    declared = stop - first  # what this pass reads
    bounded = segment != (0.0, None)  # a segment ends before the file may: read no further

    target_sr = file_sr if sr is None else sr
    keep_channels = channel is None and not mono
    resampler = _make_resampler(file_sr, target_sr, channels if keep_channels else 1)
    frames_read = given = 0
    while True:
        request = min(block_frames, declared - frames_read) if bounded else block_frames
        try:
            block = handle.read(request, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as error:
            raise AudioDecodeError(
                path,
                f"truncated or corrupt: header says {declared / file_sr:.3g} s, decoding failed after "
                f"{frames_read / file_sr:.3g} s ({_libsndfile_reason(error)})",
            ) from None
        last = len(block) < request or (bounded and frames_read + len(block) >= declared)
        if len(block):
            _check_samples(block, path=path, offset_frames=first + frames_read, sr=file_sr)
            frames_read += len(block)
            if channel is not None:
                block = block[:, channel : channel + 1]
            elif not keep_channels and channels > 1:
                block = block.mean(axis=1, keepdims=True, dtype=np.float32)
        if resampler is not None:
            block = resampler.resample_chunk(block, last=last)
        if last:
            break
        if len(block):
            given += len(block)
            yield block

    if frames_read == 0:
        raise AudioDecodeError(path, "no audio samples (0 frames)")
    if frames_read < declared:
        raise AudioDecodeError(
            path, f"truncated: header says {declared / file_sr:.3g} s, {frames_read / file_sr:.3g} s present"
        )
    if not given + len(block):  # a few frames at a high rate can resample to nothing
        raise AudioDecodeError(path, f"no audio samples at {target_sr} Hz ({frames_read} frames at {file_sr} Hz)")
    if len(block):
        yield block


def stream(
    path: str | os.PathLike[str],
    *,
    sr: int,
    channel: int | None = None,
    block_frames: int = _BLOCK_FRAMES,
    start: float = 0.0,
    end: float | None = None,
) -> tuple[int, Callable[[], Iterator[np.ndarray]]]:
    """A file's mono samples at ``sr`` in blocks, for files too long to hold: each pass re-reads the file.

    The samples and every check are those of :func:`load` (mixed down unless ``channel`` is set);
    only one block is decoded and resampled at a time.

    Parameters
    ----------
    path : str or os.PathLike
        The audio file.
    sr : int
        Target sampling rate in Hz.
    channel : int or None
        Take only this channel instead of mixing down.
    block_frames : int
        Frames read per block (at the file's rate).
    start, end : float
        The segment, in seconds of the recording, as for :func:`load`.

    Returns
    -------
    num_samples : int
        Samples a pass gives, from the header: soxr's output length for the declared frames.
    chunks : callable
        Each call opens the file and returns a fresh iterator of ``np.ndarray [shape=(n,)]``
        float32 pieces, ``num_samples`` samples in all. A pass raises
        :class:`~adares.errors.AudioDecodeError` as :func:`load` would.

    Raises
    ------
    AudioDecodeError
        For what the header shows (missing, not audio, implausible rate, missing channel, a
        truncated WAV, no frames).
    """
    _check_rate(sr)
    _check_channel(channel)
    segment = _check_segment(start, end)
    with _opened(path) as handle:
        _check_header(handle, path=path, channel=channel)
        file_sr = int(handle.samplerate)
        first, stop = _segment_frames(segment, file_sr=file_sr, declared=int(handle.frames), path=path)
        declared = stop - first
    # soxr's stream gives round(frames * sr / file_sr) samples, halves rounded up
    num_samples = declared if file_sr == sr else (declared * sr + file_sr // 2) // file_sr

    def chunks() -> Iterator[np.ndarray]:
        given = 0
        with _opened(path) as handle:
            blocks = _blocks(
                handle, path=path, sr=sr, mono=True, channel=channel, block_frames=block_frames, segment=segment
            )
            for block in blocks:
                given += len(block)
                yield block[:, 0]
        if given != num_samples:
            raise AudioDecodeError(path, f"changed while being read: {given} samples, {num_samples} expected")

    return num_samples, chunks


def _make_resampler(file_sr: int, target_sr: int, channels: int):  # noqa: ANN202 - soxr type
    if file_sr == target_sr:
        return None
    import soxr  # imported lazily: only needed when rates differ

    return soxr.ResampleStream(file_sr, target_sr, channels, dtype="float32", quality="HQ")


_MPEG_SUFFIXES = (".mp3", ".mp2", ".mp1", ".mpga")


@contextlib.contextmanager
def _mpeg_notes_silenced(path: str | os.PathLike[str]) -> Iterator[None]:
    """Send the process's stderr to the null device while libsndfile reads an MPEG file.

    libmpg123, libsndfile's MP3 decoder, prints its notes on a corrupt stream ("Illegal
    Audio-MPEG-Header", "Trying to resync...") straight to file descriptor 2, a few lines per bad
    frame, in the middle of a command's progress; the reason reaches the caller through
    AudioDecodeError anyway. Only MPEG files are read this way, so nothing else is silenced.
    """
    if not os.fspath(path).lower().endswith(_MPEG_SUFFIXES):
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to silence
        yield
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
        finally:
            os.close(null)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _open_failure(path: str | os.PathLike[str], error: Exception) -> AudioDecodeError:
    """Why libsndfile could not open ``path``: the file system's reason when there is one.

    Checked only after a failure, so a good file costs no extra system calls.
    """
    _check_file(path)  # raises for a missing, empty or unreadable file, or a folder
    return AudioDecodeError(path, _describe_open_error(error))


def _check_file(path: str | os.PathLike[str]) -> None:
    file = Path(path)
    if not file.exists():
        raise AudioDecodeError(path, "file not found")
    if file.is_dir():
        raise AudioDecodeError(path, "is a directory, not an audio file")
    try:
        size = file.stat().st_size
    except OSError as error:
        raise AudioDecodeError(path, f"cannot read: {error.strerror}") from None
    if size == 0:
        raise AudioDecodeError(path, "empty file (0 bytes)")
    if not os.access(file, os.R_OK):
        raise AudioDecodeError(path, "permission denied")


def _check_samples(block: np.ndarray, *, path: str | os.PathLike[str], offset_frames: int, sr: int) -> None:
    """Refuse NaN, Inf and samples beyond :data:`MAX_ABS_SAMPLE`; a good block costs a min and a max."""
    low, high = float(block.min()), float(block.max())  # NaN propagates into both
    if not (math.isfinite(low) and math.isfinite(high)):
        first = offset_frames + int(np.argmin(np.isfinite(block).all(axis=1)))
        raise AudioDecodeError(path, f"non-finite samples (NaN or Inf) from {first / sr:.3f} s")
    peak = max(-low, high)
    if peak > MAX_ABS_SAMPLE:
        first = offset_frames + int(np.argmax((np.abs(block) > MAX_ABS_SAMPLE).any(axis=1)))
        raise AudioDecodeError(path, out_of_range_reason(peak, from_seconds=first / sr))


def _check_wav_truncation(path: str | os.PathLike[str], *, file_sr: int) -> None:
    """Compare a RIFF/WAVE header's declared data size with the bytes actually present.

    libsndfile quietly shortens a truncated WAV to the bytes that exist, so the loss would go
    unnoticed; the header is the only record of what should have been there.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return
            file_size = os.fstat(handle.fileno()).st_size
            block_align = 0
            while True:
                chunk = handle.read(8)
                if len(chunk) < 8:
                    return
                chunk_id, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if chunk_id == b"fmt ":
                    fmt = handle.read(min(chunk_size, 16))
                    if len(fmt) >= 14:
                        block_align = struct.unpack("<H", fmt[12:14])[0]
                    handle.seek(chunk_size - len(fmt) + (chunk_size & 1), os.SEEK_CUR)
                elif chunk_id == b"data":
                    if chunk_size in (0, 0xFFFFFFFF) or not block_align:
                        return  # size unknown (streamed WAV): nothing to compare against
                    present = file_size - handle.tell()
                    if present < chunk_size:
                        declared_s = chunk_size / block_align / file_sr
                        present_s = max(present, 0) / block_align / file_sr
                        raise AudioDecodeError(
                            path, f"truncated: header says {declared_s:.3g} s, {present_s:.3g} s present"
                        )
                    return
                else:
                    handle.seek(chunk_size + (chunk_size & 1), os.SEEK_CUR)
    except OSError as error:
        raise AudioDecodeError(path, f"cannot read: {error.strerror}") from None


# libsndfile messages that mislead or say nothing about the file, and what they mean here
_CLEARER_REASONS = {
    # the file was checked to exist and be regular: the MPEG reader says this of a stream it cannot sync to
    "File does not exist or is not a regular file (possibly a pipe?)": "malformed or unrecognised stream",
    # the header gives a sample rate or channel count libsndfile cannot use (0, 2^31, ...)
    "SF_INFO struct incomplete": "invalid sample rate or channel count in the header",
    "Unspecified internal error": "malformed file; libsndfile gives no reason",
}


def _libsndfile_reason(error: Exception) -> str:
    text = str(error)
    for prefix in ("Error : ", "Error: "):
        if prefix in text:
            text = text.split(prefix, 1)[1]
    if text.startswith("Error opening") and ": " in text:
        text = text.rsplit(": ", 1)[1]
    text = text.strip().rstrip(".")
    return _CLEARER_REASONS.get(text, text)


def _describe_open_error(error: Exception) -> str:
    reason = _libsndfile_reason(error)
    if "Format not recognised" in reason or "format not recognised" in reason.lower():
        return "not an audio file (format not recognised)"
    return f"cannot decode ({reason})"
