"""Settings of a stage-2 (student) run; a light module so the CLI can show the defaults without importing torch.

Identity fields (everything that changes the trained weights) are saved in the run folder's run.json and a
rerun with other values is refused. Execution fields only choose where and how fast the same run happens:
`accelerator`, `strategy`, `channels_last`, `compile`, `deterministic`, `num_workers` and `progress`
(the sampler draws every crop in the main process, so workers never change the data). `devices` and
`num_nodes` are identity: the number of processes multiplies the global batch.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import IAAError
from ..loss_names import FeatureLossName, LabelLossName
from ..settings import execution, setting

MODEL, OPTIM, LOSS, HARDWARE = "model", "optimisation", "loss", "hardware"
SCHEDULES = ("auto", "probe", "partial", "full")  # `finetune` (see training.student_recipe)
RULES = ("one-se", "best", "teacher")  # `recipe_rule` (see training.student_recipe)


# what training computes from the same settings; part of `iaa fit`'s stage key, so a run folder trained by older
# code is trained again. 2: the student normalises its pooled MLSP vector (`StudentConfig.pooled_power`); 3: rule
# `teacher` without unlabelled photos to hold out agrees with the teacher on the val images (not `best`)
STUDENT_FIT_VERSION = 3


@dataclass
class StudentTrainConfig:
    """Every setting of a stage-2 run (identity ones saved in run.json and in the checkpoints)."""

    backbone: str = setting("tf_efficientnet_lite0", help="any timm model name", group=MODEL)
    pretrained: bool = setting(True, help="start the backbone from ImageNet weights (off: random weights, for "
                               "tests and ablations)", group=MODEL)
    weights: str | None = setting(None, help="local backbone weights file (else bundled / local cache)", group=MODEL)
    input_size: int | None = setting(None, help="training crop and scoring size (default: the backbone's)",
                                     group=MODEL, low=1)
    train_resize: int | None = setting(None, help="images are resized to this before the random crop "
                                       "(default: input size x 256/224)", group=MODEL, low=1)
    feature_dim: int = setting(256, help="width of the student's aesthetic feature (a linear distillation "
                               "projector maps it to the teacher's)", group=MODEL, low=1)
    pooling: str = setting("mlsp", help="mlsp: every block of the backbone pooled, as the teachers; last: its last "
                           "feature map only", group=MODEL)
    warm_start: bool = setting(True, help="fit the layers after the backbone in closed form on its frozen features "
                               "before fine-tuning (validated as epoch 0)", group=MODEL)
    finetune: str = setting("auto", help="probe (frozen backbone), partial, full, or auto: the best val epoch "
                            "chooses between them (full above 20,000 labels)", group=OPTIM)
    recipe_rule: str = setting("best", help="how the val split chooses the kept epoch: best (the highest val SRCC) "
                               "or one-se (a more complex recipe, probe < partial < full, only when its val SRCC is "
                               "higher by more than one standard error of the paired difference) or teacher (a "
                               "distilled run holds a quarter of its unlabelled photos out of training and keeps "
                               "the epoch that agrees best with the teacher on them; with none to hold out, on the "
                               "val images; the baseline: best)", group=OPTIM)
    freeze_epochs: int = setting(1, help="first epochs with a frozen backbone (partial/full/auto)", group=OPTIM, low=0)
    partial_epochs: int = setting(1, help="auto: epochs of partial fine-tuning between the frozen and the full ones",
                                  group=OPTIM, low=0)
    epochs: int = setting(15, help="maximum epochs", group=OPTIM, low=1)
    batch_size: int = setting(64, help="images per step and process", group=OPTIM, low=1)
    backbone_lr: float = setting(3e-4, help="AdamW learning rate of the backbone", group=OPTIM, above=0)
    head_lr: float = setting(1e-3, help="AdamW learning rate of the prediction layer and distillation projector", group=OPTIM,
                             above=0)
    weight_decay: float = setting(1e-2, help="AdamW weight decay (not on biases and norms)", group=OPTIM, low=0)
    warmup_epochs: float = setting(1.0, help="linear warm-up length in epochs", group=OPTIM, low=0)
    min_lr_ratio: float = setting(0.01, help="cosine floor as a share of the learning rates", group=OPTIM, low=0,
                                  high=1)
    grad_clip: float | None = setting(1.0, help="gradient norm clipping; 0 disables", group=OPTIM, low=0)
    ema: bool = setting(False, help="validate and save an EMA of the weights", group=OPTIM)
    ema_decay: float = setting(0.999, help="EMA decay per step", group=OPTIM, low=0, high=1)
    patience: int = setting(5, help="early stopping: epochs without a better val SRCC", group=OPTIM, low=0)
    agreement_patience: int = setting(0, help="recipe_rule teacher: stop after this many epochs in a row that agree "
                                      "less with the teacher (held-out photos or val images) than the kept one "
                                      "(epoch 0 included); 0 never stops on it", group=OPTIM, low=0)
    seed: int = setting(0, help="seed of initialisation, data order and crops (`iaa train-student` also carves "
                        "val with it; `iaa fit` carves it once with the recipe's seed, for all --seeds)", group=OPTIM)
    hflip: bool = setting(True, help="random horizontal flips", group=OPTIM)
    # The feature MSE is on the teacher head's raw aesthetic-feature scale, which starts ~10x above the EMD
    # term: 0.1 beat 1.0 on the demo data (val SRCC 0.822 vs 0.759; baseline 0.808).
    alpha: float = setting(0.1, help="feature distillation weight", group=LOSS, low=0)
    beta: float = setting(1.0, help="output distillation weight", group=LOSS, low=0)
    unlabeled_ratio: float = setting(1.0, help="unlabelled images added to every train batch per labelled image, "
                                     "when the dataset has unlabelled images (distillation only: the baseline "
                                     "ignores them); 0 leaves them out", group=LOSS, low=0)
    feature_loss: FeatureLossName = setting("mse", help="feature distillation loss", group=LOSS)
    loss: LabelLossName = setting("emd", help="ground-truth loss (scalar labels: emd means mse)", group=LOSS)
    rank_weight: float = setting(0.0, help="pairwise rank loss weight", group=LOSS, low=0)
    precision: str = setting("auto", help="auto (bf16-mixed on GPU, 32-true on CPU), 16-mixed, 32-true, ...",
                             group=HARDWARE)
    devices: int | str = setting("auto", help="number of devices per node, or auto", group=HARDWARE)
    num_nodes: int = setting(1, help="number of nodes", group=HARDWARE, low=1)
    accelerator: str = execution("auto", help="auto, cpu or gpu", group=HARDWARE)
    strategy: str = execution("auto", help="Lightning strategy, e.g. ddp or ddp_spawn", group=HARDWARE)
    channels_last: bool = execution(True, help="channels-last memory layout", group=HARDWARE)
    compile: bool = execution(False, help="torch.compile the student", group=HARDWARE)
    deterministic: bool | None = execution(None, help="deterministic algorithms (default: on for CPU, off on GPU)",
                                           group=HARDWARE)
    num_workers: int = execution(4, help="DataLoader workers", group=HARDWARE, low=0)
    progress: bool = execution(True, help="progress bars", group=HARDWARE)

    @classmethod
    def from_dict(cls, data: dict) -> "StudentTrainConfig":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise IAAError(f"unknown student training setting(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def __post_init__(self) -> None:
        if self.finetune not in SCHEDULES or self.pooling not in ("mlsp", "last") or self.recipe_rule not in RULES:
            raise IAAError(f"finetune must be one of {', '.join(SCHEDULES)}, pooling mlsp or last and recipe_rule "
                           f"{', '.join(RULES)}, got {self.finetune!r}, {self.pooling!r} and {self.recipe_rule!r}")

    @property
    def distilled(self) -> bool:
        """True for a distilled run (alpha or beta > 0), False for the label-only baseline."""
        return bool(self.alpha or self.beta)

    def hardware(self) -> dict:
        """The settings `spine.build_trainer` reads."""
        return {"accelerator": self.accelerator, "devices": self.devices, "num_nodes": self.num_nodes,
                "strategy": self.strategy, "precision": self.precision, "deterministic": self.deterministic,
                "progress": self.progress}
