"""What an exported ONNX file says about itself: the student config and preprocessing in metadata_props.

Both the exporter (`onnx_export`) and the onnx scoring backend (`scorer`) read this module, so neither
imports the other.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..errors import IAAError
from ..student import StudentConfig

DEFAULT_ONNX_NAME = "model.onnx"
CONFIG_KEY = "iaa_distill.student_config"
PREPROCESSING = (
    "decode RGB (EXIF orientation applied), resize the whole image to input_size x input_size "
    "with `interpolation` (antialiased), scale to float [0, 1]; normalisation is inside the graph"
)


def metadata_props(config: StudentConfig) -> dict[str, str]:
    """The metadata_props written into an exported file: the whole config plus readable preprocessing."""
    return {
        CONFIG_KEY: json.dumps(asdict(config)),
        "input_size": str(config.input_size),
        "interpolation": config.interpolation,
        "scale": json.dumps(list(config.scale)),
        "num_levels": str(config.num_levels or 0),
        "input": "images: float32 N x 3 x input_size x input_size, RGB in [0, 1]",
        "preprocessing": PREPROCESSING,
        "outputs": "mean: (N,) score on `scale`" + ("; distribution: (N, num_levels)" if config.num_levels else ""),
    }


def config_from_metadata(props: dict[str, str], source: str | Path) -> StudentConfig:
    """The student config stored in an exported file's metadata_props."""
    if CONFIG_KEY not in props:
        raise IAAError(f"{source}: no iaa-distill metadata (export it with: iaa export onnx --model DIR --out FILE)")
    return StudentConfig.from_dict(json.loads(props[CONFIG_KEY]))
