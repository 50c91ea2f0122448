"""What a run computes (:class:`ExtractConfig`) and the hashes that say whether two runs agree.

Two hashes go into every manifest record. The configuration hash is that of the settings resolved
by building the extractor (defaults filled in, the model's weights hashed): equal hashes mean
interchangeable outputs. The request hash is that of the settings as given, computed without
building anything (no torch), so a rerun can find the configuration an earlier run resolved for
the same request. Standard library only: the process that plans a run imports it before it
starts its workers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adares import __version__

__all__ = ["ExtractConfig", "identity_hash"]

_PRETRAINED = Path(__file__).resolve().parent.parent / "pretrained"
"""The shipped compressor bundles, one folder per name."""


@dataclass(frozen=True)
class ExtractConfig:
    """Everything that determines the content of the feature files.

    Parameters
    ----------
    frontend : dict
        Keyword arguments of :class:`~adares.frontend.MelFrontend` (sr, hop, win, n_fft, n_mels,
        fmin, fmax, log, preset).
    model : str
        ``"default"`` (the shipped DiffRes compressor), ``"none"`` (fine frames), ``"flux"``, a
        pretrained compressor name, or a bundle folder.
    reduction : float
        Fraction of frames merged away when a compressor runs (T' = round((1 - reduction) T)).
    min_span_exponent : float or None
        ``κ`` in ``[0, 1]``: every merged frame spans at least ``(T/T')^κ`` fine frames (see
        :func:`adares.functional.merge.normalize_scores`). None: the model's own (its card's; 0
        for ``flux``).
    format : str
        ``"npz"`` (one file per input), ``"hdf5"``, or ``"shards"`` (WebDataset tar shards).
    channel : int or None
        Take this channel instead of mixing down.
    device : str
        Torch device for the workers (``cpu``, ``cuda``, ``auto``). Does not change the content.
    dtype : str
        ``"float32"`` or ``"float16"``: the type ``mel`` is written in.
    shard_files, shard_bytes : int
        Most files and bytes per shard (``format="shards"``); a file larger than ``shard_bytes``
        gets a shard of its own. The layout only: not part of the configuration hash.
    """

    frontend: dict[str, Any] = field(default_factory=dict)
    model: str = "default"
    reduction: float = 0.5
    min_span_exponent: float | None = None
    format: str = "npz"
    channel: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    shard_files: int = 1000
    shard_bytes: int = 1 << 30

    def build_extractor(self):  # noqa: ANN201 - Extractor protocol
        """Construct the front end and compressor (in the worker that will use them).

        The imports are here, not at the top, because the process that plans a run never needs
        them: only the process that extracts pays for torch.
        """
        from adares.frontend import MelFrontend
        from adares.registry import resolve_extractor

        frontend = MelFrontend(**self.frontend)
        return resolve_extractor(
            self.model,
            frontend=frontend,
            reduction=self.reduction,
            min_span_exponent=self.min_span_exponent,
            device=self.device,
        )

    def identity(self, extractor: Any) -> dict[str, Any]:
        """The settings that define the output, resolved (defaults filled in, model hashed)."""
        return (
            {
                "frontend": extractor.frontend.config(),
                "compressor": extractor.name,
                "compressor_sha256": extractor.sha256,
                "reduction": None if self.model == "none" else self.reduction,
                "format": self.format,
                "channel": self.channel,
            }
            | ({} if self.dtype == "float32" else {"dtype": self.dtype})
            | _span_identity(extractor)
        )

    def config_hash(self, extractor: Any) -> str:
        """Short sha256 of :meth:`identity`: equal hashes mean interchangeable outputs."""
        return identity_hash(self.identity(extractor))

    def request_hash(self) -> str:
        """Short sha256 of what a run asks for, computed without building anything (no torch).

        The settings as given (the device aside: it does not change the output), the adares
        version, and the size and modification time of every file of each folder the model name
        could mean (a shipped bundle or a path). A later run with the same request hash gets the
        same configuration hash.
        """
        settings = asdict(self)
        settings.pop("device")
        for name, default in _LAYOUT_DEFAULTS.items():  # settings added later leave earlier hashes as they were
            if settings[name] == default:
                settings.pop(name)
        return identity_hash({"settings": settings, "adares": __version__, "model_files": _model_files(self.model)})


_LAYOUT_DEFAULTS = {"dtype": "float32", "shard_files": 1000, "shard_bytes": 1 << 30, "min_span_exponent": None}


def _span_identity(extractor: Any) -> dict[str, Any]:
    """The score cap the extractor merges with, when it has one (absent: the hashes from before it)."""
    exponent = getattr(extractor, "min_span_exponent", 0.0)
    return {"min_span_exponent": exponent} if exponent else {}


def identity_hash(identity: dict[str, Any]) -> str:
    """Short sha256 of a JSON-serialisable description (keys sorted)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _model_files(model: str) -> list[list[Any]]:
    """[path, size, mtime_ns] of the files a model name could load from (the test that resumed runs
    apply to their sources: a bundle replaced by one of the same size and time goes unnoticed)."""
    if model in ("none", "flux"):
        return []
    stamps = []
    for folder in (Path(model), _PRETRAINED / model):
        try:
            for file in sorted(entry for entry in folder.iterdir() if entry.is_file()):
                stat = file.stat()
                stamps.append([str(file.resolve()), stat.st_size, stat.st_mtime_ns])
        except OSError:  # not a folder, or changing under us: nothing to load from there now
            continue
    return stamps
