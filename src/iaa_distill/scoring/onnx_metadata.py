"""What an exported ONNX file says about itself: the model config and preprocessing in metadata_props.

Both the exporter (`onnx_export`) and the onnx scoring backend (`scorer`) read this module, so neither
imports the other. A student's file holds its config; a teacher's (accuracy mode) its head config,
which records every teacher's input size and interpolation, the layout of the packed input row.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..errors import IAAError
from ..student import StudentConfig
from ..teacher_head import TeacherHeadConfig
from ..teacher_model import TeacherScoringConfig

DEFAULT_ONNX_NAME = "model.onnx"
EMBEDDING_OUTPUT = "embedding"  # the aesthetic feature, (N, F): the layer the score is read from
CONFIG_KEY = "iaa_distill.student_config"
TEACHER_CONFIG_KEY = "iaa_distill.teacher_head_config"
PREPROCESSING = (
    "decode RGB (EXIF orientation applied; a JPEG at reduced size: PIL draft mode asked for the short side "
    "input_size, aspect kept), resize the whole image to input_size x input_size with `interpolation` "
    "(antialiased), scale to float [0, 1]; normalisation is inside the graph (the README's reference snippet)"
)
TEACHER_PREPROCESSING = (
    "decode RGB (EXIF orientation applied); for each entry of teacher_inputs in order, resize the whole image to "
    "input_size x input_size with its interpolation (antialiased), scale to float [0, 1] and flatten it (C, H, W "
    "order); join the pieces into one row; normalisation is inside the graph"
)


def _outputs(num_levels: int | None) -> str:
    return ("mean: (N,) score on `scale`" + ("; distribution: (N, num_levels)" if num_levels else "")
            + f"; {EMBEDDING_OUTPUT}: (N, F) aesthetic feature")


def metadata_props(config: StudentConfig | TeacherScoringConfig) -> dict[str, str]:
    """The metadata_props written into an exported file: the whole config plus readable preprocessing."""
    if isinstance(config, TeacherScoringConfig):
        return _teacher_props(config)
    return {
        CONFIG_KEY: json.dumps(asdict(config)),
        "input_size": str(config.input_size),
        "interpolation": config.interpolation,
        "scale": json.dumps(list(config.scale)),
        "num_levels": str(config.num_levels or 0),
        "input": "images: float32 N x 3 x input_size x input_size, RGB in [0, 1]",
        "preprocessing": PREPROCESSING,
        "outputs": _outputs(config.num_levels),
    }


def _teacher_props(config: TeacherScoringConfig) -> dict[str, str]:
    transform = config.input_transform()
    inputs = [{"teacher": name, "input_size": size, "interpolation": interpolation}
              for name, size, interpolation in zip(config.teacher_names, transform.sizes, transform.interpolations)]
    return {
        TEACHER_CONFIG_KEY: json.dumps(asdict(config.head)),
        "teacher_inputs": json.dumps(inputs),
        "hflip": str(config.head.hflip).lower(),
        "scale": json.dumps(list(config.scale)),
        "num_levels": str(config.num_levels or 0),
        "input": f"packed_images: float32 N x {transform.numel}, RGB in [0, 1], one packed row per image",
        "preprocessing": TEACHER_PREPROCESSING,
        "outputs": _outputs(config.num_levels),
    }


def config_from_metadata(props: dict[str, str], source: str | Path) -> StudentConfig | TeacherScoringConfig:
    """The model config stored in an exported file's metadata_props."""
    if TEACHER_CONFIG_KEY in props:
        return TeacherScoringConfig.from_head(TeacherHeadConfig.from_dict(json.loads(props[TEACHER_CONFIG_KEY])), source)
    if CONFIG_KEY not in props:
        raise IAAError(f"{source}: no iaa-distill metadata (export it with: iaa export onnx --model DIR --out FILE)")
    return StudentConfig.from_dict(json.loads(props[CONFIG_KEY]))
