"""The registry of generator architectures: the `arch` of a model dir's config.json names one of these."""

from faceinpaint.models.deepfill import DeepFillV2
from faceinpaint.models.discriminator import SNPatchGAN
from faceinpaint.models.twoface import TwoFace

ARCHITECTURES = {"deepfillv2": DeepFillV2, "twoface": TwoFace}

__all__ = ["ARCHITECTURES", "DeepFillV2", "SNPatchGAN", "TwoFace"]
