"""Teacher features of a dataset in a resumable, memory-mapped cache (`iaa features`)."""
from .cache import FeatureCache
from .extract import extract_features

__all__ = ["FeatureCache", "extract_features"]
