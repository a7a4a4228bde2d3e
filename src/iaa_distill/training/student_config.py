"""Settings of a stage-2 (student) run; a light module so the CLI can show the defaults without importing torch."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import IAAError


@dataclass
class StudentTrainConfig:
    """Every setting of a stage-2 run (saved in run.json and in the checkpoints)."""

    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool = True  # False only for tests/ablations: a random-weight backbone
    weights: str | None = None  # local weights file for the backbone (else bundled/cache, see teachers.weights)
    input_size: int | None = None  # None: the backbone's pretrained input size (timm)
    train_resize: int | None = None  # None: input_size * 256 / 224
    feature_dim: int | None = None  # None: the teacher's aesthetic-feature size (targets), else 256
    epochs: int = 15
    batch_size: int = 64
    backbone_lr: float = 3e-4
    head_lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    grad_clip: float | None = 1.0
    ema: bool = False
    ema_decay: float = 0.999
    # feature distillation weight; the MSE is on the teacher head's raw aesthetic-feature scale, which starts
    # ~10x above the EMD term: 0.1 beat 1.0 on the demo data (val SRCC 0.822 vs 0.759; baseline 0.808)
    alpha: float = 0.1
    beta: float = 1.0  # output distillation weight
    feature_loss: str = "mse"  # 'mse' | 'cosine'
    loss: str = "emd"  # ground-truth loss: 'emd' | 'mse' | 'l1' (scalar labels: 'emd' means mse)
    rank_weight: float = 0.0
    hflip: bool = True
    seed: int = 0
    patience: int = 5  # epochs without val SRCC improvement before stopping
    precision: str = "auto"  # 'auto': bf16-mixed on CUDA, 32-true on CPU; or any Lightning precision
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # 'ddp' for several GPUs/nodes ('ddp_spawn' also works)
    channels_last: bool = True
    compile: bool = False
    deterministic: bool | None = None  # None: on for CPU runs, off on GPU (speed)
    num_workers: int = 4
    progress: bool = True  # progress bars
    val_fraction: float = 0.05  # used when the dataset is opened from a spec (CLI, recipes)

    @classmethod
    def from_dict(cls, data: dict) -> "StudentTrainConfig":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise IAAError(f"unknown student training setting(s): {', '.join(sorted(unknown))}")
        return cls(**data)
