"""Joint training of a temporal compressor (DiffRes or a baseline) with a classifier.

One module per concern, each depending only on those before it:

- :mod:`~adares.train.config`: :class:`TrainConfig`, every setting of a run and its validation;
- :mod:`~adares.train.data`: ``labels.csv`` and the cached fine log-mel of a labelled folder;
- :mod:`~adares.train.model`: the compressor and the classifier a configuration names;
- :mod:`~adares.train.macs`: their multiply-accumulates per clip;
- :mod:`~adares.train.output`: the files of a run's output folder, written atomically;
- :mod:`~adares.train.loop`: the optimiser, the training step, the resumable epoch loop,
  evaluation and :func:`train`;
- :mod:`~adares.train.multitask`: one shared DiffRes estimator trained on several tasks.
"""

from adares.train.config import COMPRESSORS, DEFAULT_ESTIMATOR_CHANNELS, DEFAULT_WIDTHS, TrainConfig
from adares.train.data import SPLITS, SpectrogramSet, load_spectrograms, read_labels
from adares.train.loop import build_optimizer, evaluate, train
from adares.train.macs import classifier_macs, compressor_macs
from adares.train.model import JointModel, build_classifier, build_compressor, build_model
from adares.train.multitask import MultiTaskModel, train_multitask
from adares.train.output import BUNDLE, CHECKPOINT, CONFIG, METRICS, WEIGHTS

__all__ = [
    "BUNDLE",
    "CHECKPOINT",
    "COMPRESSORS",
    "CONFIG",
    "DEFAULT_ESTIMATOR_CHANNELS",
    "DEFAULT_WIDTHS",
    "METRICS",
    "SPLITS",
    "WEIGHTS",
    "JointModel",
    "MultiTaskModel",
    "SpectrogramSet",
    "TrainConfig",
    "build_classifier",
    "build_compressor",
    "build_model",
    "build_optimizer",
    "classifier_macs",
    "compressor_macs",
    "evaluate",
    "load_spectrograms",
    "read_labels",
    "train",
    "train_multitask",
]
