"""Settings of a stage-1 (teacher head) run; a light module so the CLI can build its options without torch.

Identity fields change the trained head and are saved in run.json (a rerun with other values is refused);
`device` and `progress` are execution fields: the same run on another device resumes.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..loss_names import LabelLossName
from ..settings import execution, setting

OPTIM, MODEL, HARDWARE = "optimisation", "model", "hardware"
# what the fit computes from the same settings; part of `iaa fit`'s stage key, so a run folder fitted by older
# code is fitted again. 2: the linear head normalises its MLSP features (signed square root, block variance)
TEACHER_FIT_VERSION = 2


@dataclass
class TeacherTrainConfig:
    """Hyper-parameters of stage 1 (head chosen by cross-validation; AdamW + cosine decay over `epochs`)."""

    epochs: int = setting(30, help="maximum epochs", group=OPTIM, low=1)
    batch_size: int = setting(128, help="feature rows per step", group=OPTIM, low=1)
    lr: float = setting(1e-3, help="AdamW learning rate, cosine-decayed", group=OPTIM, above=0)
    weight_decay: float = setting(1e-4, help="AdamW weight decay", group=OPTIM, low=0)
    hidden: tuple[int, ...] = setting((1024, 256), help="hidden layer sizes, comma-separated; the last is the "
                                      "aesthetic feature size", group=MODEL)
    dropout: float = setting(0.25, help="dropout before each hidden and the output layer", group=MODEL, low=0,
                             high=0.99)
    candidates: tuple[str, ...] = setting(
        ("mlp", "mlp:256:0.5", "ridge:4"),
        help="heads to choose from by cross-validation on the training split: mlp (the --hidden/--dropout MLP), "
             "mlp:SIZES:DROPOUT (e.g. mlp:256,64:0.5), ridge:RANK (a linear head by reduced-rank ridge); "
             "one candidate skips the cross-validation (--candidates mlp reproduces the paper)", group=MODEL)
    cv_folds: int = setting(5, help="folds of the cross-validation that chooses the head", group=MODEL, low=2)
    linear_on_val: bool = setting(False, help="fit a chosen linear head (ridge) on train + val: it is fitted in closed "
                                  "form and chooses no epoch on val, so a small dataset's val labels can train it. "
                                  "Its val metrics are then in-sample, and a student whose epoch the val split "
                                  "chooses is then chosen on labels its teacher has seen", group=MODEL)
    loss: LabelLossName = setting("emd", help="emd on vote distributions (MSE for scalar labels), or mse/l1 on the "
                                  "mean score", group=OPTIM)
    rank_weight: float = setting(0.0, help="weight of a pairwise rank loss", group=OPTIM, low=0)
    seed: int = setting(0, help="seed of training (`iaa train-teacher` also carves val with it)", group=OPTIM)
    patience: int = setting(5, help="early stopping: epochs without a better val SRCC", group=OPTIM, low=0)
    precision: str = setting("32-true", help="Lightning precision, e.g. bf16-mixed on a GPU", group=HARDWARE)
    device: str = execution("auto", help="auto, cpu, cuda or cuda:N", group=HARDWARE)
    progress: bool = execution(True, help="progress bar", group=HARDWARE)
