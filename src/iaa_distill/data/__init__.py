"""Dataset readers: every format becomes a list of `ImageRecord`s."""
from .records import Dataset, ImageRecord, Label, level_values
from .registry import open_dataset

__all__ = ["Dataset", "ImageRecord", "Label", "level_values", "open_dataset"]
