"""Classifier backbones and training augmentations for the trainer and the benchmarks."""

from adares.models.augment import mixup, spec_augment
from adares.models.cnn import ConvClassifier

__all__ = ["ConvClassifier", "mixup", "spec_augment"]
