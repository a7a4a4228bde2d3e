"""How much of the student's backbone is fine-tuned, epoch by epoch, and which recipe the validation data chose.

Epoch 0 is the warm-started model (`training.warm_start`): a linear probe on the frozen backbone. Then:

- `probe`: the backbone stays frozen (weights and BatchNorm statistics); only the layers after it train;
- `partial`: frozen for `freeze_epochs`, then the last third of the backbone's blocks train as well;
- `full`: frozen for `freeze_epochs`, then the whole backbone (the paper's end-to-end recipe);
- `auto` (default): on up to `AT_SCALE` labelled training images, `progressive`: frozen for
  `freeze_epochs`, partial for `partial_epochs`, then full. The epoch with the best validation SRCC is kept
  (epoch 0 included), so the validation data choose between a probe, partial and full fine-tuning, and the
  frozen first epochs keep the probe from being wrecked by a high learning rate on a random direction.
  Above `AT_SCALE` labels: `full` (with the warm start); there fine-tuning end to end is what works (the
  paper's AVA results) and the val split is large enough to pick the epoch.

The backbone's learning rate is 0 while it is frozen and its warm-up + cosine schedule starts when it thaws.
A frozen part runs without gradients (and in eval mode), so frozen epochs cost a forward pass only.
"""
from __future__ import annotations

import math

from torch import nn

from ..student import Student
from ..teachers.mlsp import mlsp_blocks

AT_SCALE = 20_000
PARTIAL_SHARE = 1 / 3  # of the backbone's blocks, the last ones
TEACHER_SHARE_FOR_STUDENT = 0.9


def resolve_schedule(finetune: str, num_labelled: int) -> str:
    """`probe`, `partial`, `full` or `progressive` (what `auto` means for this many labelled training images)."""
    if finetune != "auto":
        return finetune
    return "full" if num_labelled > AT_SCALE else "progressive"


def phase(epoch: int, schedule: str, freeze_epochs: int, partial_epochs: int) -> str:
    """What trains in 1-based `epoch` (0: the warm start): `probe` (frozen backbone), `partial` or `full`."""
    if epoch == 0 or schedule == "probe" or epoch <= freeze_epochs:
        return "probe"
    if schedule == "partial" or (schedule == "progressive" and epoch <= freeze_epochs + partial_epochs):
        return "partial"
    return "full"


def thaw_epoch(schedule: str, freeze_epochs: int) -> int | None:
    """The last frozen epoch (the backbone's schedule starts after it); None when it never thaws."""
    return None if schedule == "probe" else freeze_epochs


def trainable_backbone(model: Student, what: str) -> list[nn.Module]:
    """The backbone modules that train in phase `what` (none, the last third of the blocks and all after
    them, or the whole backbone)."""
    if what == "probe":
        return []
    if what == "full":
        return [model.backbone]
    blocks = mlsp_blocks(model.backbone)
    first = blocks[len(blocks) - max(1, math.ceil(len(blocks) * PARTIAL_SHARE))][1]
    inside = {id(m) for m in first.modules()}
    modules, seen = [], False
    for leaf in _leaves_in_order(model.backbone):
        seen = seen or id(leaf) in inside
        if seen:
            modules.append(leaf)
    return modules


def _leaves_in_order(module: nn.Module) -> list[nn.Module]:
    """Modules holding parameters directly, in registration (network) order."""
    return [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]


def set_phase(model: Student, what: str) -> None:
    """Freeze (no gradients, eval-mode BatchNorm) every backbone part that does not train in phase `what`."""
    model.backbone.requires_grad_(False)
    model.backbone.eval()
    for module in trainable_backbone(model, what):
        module.requires_grad_(True)
        module.train(model.training)


def recipe_report(history: list[dict], best_epoch: int, schedule: str, freeze_epochs: int, partial_epochs: int,
                  num_val: int) -> dict:
    """The recipe chosen by the best validation epoch, and each recipe's best val SRCC (for metrics.json)."""
    scores: dict[str, float] = {}
    for entry in history:
        name = phase(entry["epoch"], schedule, freeze_epochs, partial_epochs)
        value = entry.get("val_srcc", -math.inf)
        scores[name] = max(scores.get(name, -math.inf), value)
    return {"schedule": schedule, "chosen": phase(best_epoch, schedule, freeze_epochs, partial_epochs),
            "scores": scores, "selected_on": f"best epoch by SRCC on the val split ({num_val} images), "
                                             "epoch 0 (the warm-started probe) included"}


def choice_lines(recipe: dict, student_srcc: float | None, teacher_srcc: float | None) -> list[str]:
    """What `iaa train-student` / `iaa fit` print about the chosen recipe and the student's share of the teacher."""
    scores = ", ".join(f"{k} {v:.3f}" for k, v in recipe["scores"].items())
    lines = [f"student recipe: {recipe['chosen']} (val SRCC per recipe: {scores}; {recipe['selected_on']})"]
    if student_srcc is None or not teacher_srcc or not math.isfinite(teacher_srcc) or teacher_srcc <= 0:
        return lines
    share = student_srcc / teacher_srcc
    lines.append(f"the student keeps {100 * share:.0f} % of the teacher on val (SRCC {student_srcc:.3f} vs "
                 f"{teacher_srcc:.3f})")
    if share < TEACHER_SHARE_FOR_STUDENT:
        lines.append("below 90 %: for the best accuracy score with the teacher (accuracy mode: `iaa score PHOTOS "
                     "--model TEACHER_DIR`); it runs every teacher backbone per photo, about 2-4x slower than the "
                     "student (`iaa bench` measures both on this machine)")
    return lines
