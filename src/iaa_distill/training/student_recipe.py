"""How much of the student's backbone is fine-tuned, epoch by epoch, and which recipe the validation data chose.

Epoch 0 is the warm-started model (`training.warm_start`): a linear probe on the frozen backbone. Then:

- `probe`: the backbone stays frozen (weights and BatchNorm statistics); only the layers after it train;
- `partial`: frozen for `freeze_epochs`, then the last third of the backbone's blocks train as well;
- `full`: frozen for `freeze_epochs`, then the whole backbone (the paper's end-to-end recipe);
- `auto` (default): on up to `AT_SCALE` labelled training images, `progressive`: frozen for
  `freeze_epochs`, partial for `partial_epochs`, then full, so the validation data choose between a probe,
  partial and full fine-tuning. Above `AT_SCALE` labels: `full` (with the warm start); there fine-tuning end
  to end is what works (the paper's AVA results) and the val split is large enough to pick the epoch.

Which epoch is kept (`RecipeChoice`, every schedule, epoch 0 included), with `recipe_rule`:

- `best` (default): the highest val SRCC;
- `one-se`: recipes are ordered by complexity, probe < partial < full. Within the kept epoch's
  recipe a higher val SRCC replaces it. An epoch of a more complex recipe replaces it only when its val SRCC
  is higher by more than one standard error of the difference: the standard deviation of SRCC(new) -
  SRCC(kept) over `BOOTSTRAP` paired resamples of the val images (the same resample for both, fixed seed).
  With a few dozen val images margins of a few thousandths are noise; the simpler recipe then stays. On the
  demo's 37 val images that standard error is about 0.06, so fine-tuning is kept only when it gains that much;
- `teacher`: a distilled run with unlabelled photos (or views) holds a seeded `HOLDOUT_SHARE` of them (the views of a
  held-out image together) out of its training
  (and out of the warm start's fit) and keeps the epoch whose scores agree best (SRCC) with the teacher's on
  them: a few hundred images instead of a few dozen val labels. A distilled run without enough unlabelled
  photos to hold out keeps the epoch whose scores on the val images agree best with the teacher's predictions
  on those images (their labels unused; `benchmarks/rule_cv.py` measured it against `best` on training labels
  that neither train nor choose). The label-only baseline never sees the teacher: it chooses by `best`. With
  `agreement_patience` N, such a run stops once N epochs in a row (counted from the kept one, epoch 0 included)
  agree less with the teacher than the kept epoch: the steadier signal may end a recipe that val SRCC, with its
  own `patience`, would let run on. A run without val images (`validated` False) is recorded after each
  training epoch and chooses by this agreement alone (`training.student` keeps the warm start when it has none).

The backbone's learning rate is 0 while it is frozen and its warm-up + cosine schedule starts when it thaws.
A frozen part runs without gradients (and in eval mode), so frozen epochs cost a forward pass only.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
from torch import nn

from ..data.records import ImageRecord
from ..data.views import view_source
from ..evaluation.compare import resample_counts, resampled_metrics
from ..evaluation.metrics import srcc
from ..student import Student
from ..teachers.mlsp import mlsp_blocks
from .spine import BestBySRCC, best_epoch
from .warm_start import cached_images, predict_raw

AT_SCALE = 20_000
COMPLEXITY = {"probe": 0, "partial": 1, "full": 2}
BOOTSTRAP = 1000
PARTIAL_SHARE = 1 / 3  # of the backbone's blocks, the last ones
TEACHER_SHARE_FOR_STUDENT = 0.9
HOLDOUT_SHARE = 0.25  # of the unlabelled photos, held out of a `teacher`-rule run's training
MIN_HOLDOUT = 20  # fewer held-out photos than this: no holdout, the rule agrees with the teacher on val instead
ON_HELD_OUT, ON_VAL = "held-out unlabelled", "val"  # what rule `teacher` agreed on (metrics.json `agreement_on`)
AGREED_ON = {ON_HELD_OUT: "the held-out unlabelled photos", ON_VAL: "the val images"}
NOTHING_CHOSE = ("the warm start (epoch 0, a linear probe on the frozen backbone) kept and no epoch trained: no val "
                 "images and no held-out unlabelled photos to choose on")


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


def srcc_difference_se(true: np.ndarray, new: np.ndarray, kept: np.ndarray, n_boot: int = BOOTSTRAP,
                       seed: int = 0) -> float:
    """Standard error of SRCC(new) - SRCC(kept) on the same images: the standard deviation of the difference
    over paired bootstrap resamples (`evaluation.compare`'s resampling; undefined resamples dropped)."""
    diffs = [a["srcc"] - b["srcc"] for counts in resample_counts(len(true), n_boot, seed)
             for a, b in [resampled_metrics(counts, true, [new, kept])]]
    d = np.concatenate(diffs)
    d = d[np.isfinite(d)]
    return float(d.std(ddof=1)) if len(d) > 1 else math.inf


def hold_out(records: Sequence[ImageRecord], seed: int) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """(trained on, held out): the unlabelled `records` of a `seed`-drawn `HOLDOUT_SHARE` of their source images
    (`data.views.view_source`: the views of one image are held out together; a photo is its own source), in their
    order; nothing held out when that is fewer than `MIN_HOLDOUT` photos."""
    sources = [view_source(r.image_id) for r in records]
    groups = list(dict.fromkeys(sources))
    count = round(len(groups) * HOLDOUT_SHARE)
    if round(len(records) * HOLDOUT_SHARE) < MIN_HOLDOUT:
        return list(records), []
    held = {groups[i] for i in np.random.default_rng(seed).choice(len(groups), size=count, replace=False).tolist()}
    return ([r for r, s in zip(records, sources) if s not in held], [r for r, s in zip(records, sources) if s in held])


@dataclass
class TeacherAgreement:
    """Images to agree on (rows of an image cache: held-out unlabelled photos, or the val images) and the
    teacher's mean score on each. On the val images the validation pass has already scored them: their
    `ids` match its predictions to the teacher's (`of_predictions`), and nothing is scored twice."""

    source: Path  # a uint8 image cache (.npy), resized whole to the student's input size when read
    rows: np.ndarray
    teacher_means: np.ndarray
    on: str = ON_HELD_OUT  # or ON_VAL
    ids: list[str] | None = None  # the image of each row (ON_VAL)

    def __call__(self, model: Student) -> float:
        """SRCC between `model`'s mean scores on the photos (eval mode) and the teacher's."""
        raw = predict_raw(model, cached_images(self.source, self.rows, model.config.input_size))
        return srcc(self.teacher_means, model.config.space.mean(raw).double().numpy())

    def of_predictions(self, ids: Sequence[str], means: np.ndarray) -> float:
        """SRCC between the teacher's mean scores and predicted ones `means` of the images `ids` (in any order,
        e.g. a validation pass's; every image of `self.ids` among them)."""
        position = {image_id: i for i, image_id in enumerate(ids)}
        return srcc(self.teacher_means, np.asarray(means, np.float64)[[position[i] for i in self.ids]])


class RecipeChoice(BestBySRCC):
    """`BestBySRCC` whose kept epoch follows `recipe_rule` (see the module doc). The module sets
    `val_predictions` (predicted, true mean scores of the val images) before each epoch is recorded; the
    kept epoch's predictions are part of the checkpointed state, so a resumed run decides as an uninterrupted
    one. Under rule `teacher` it also sets `val_agreement` (`TeacherAgreement`'s SRCC; None: nothing to agree on,
    so `best` decides). Each recorded epoch gets `kept` (whether it became the kept model) and, when compared by
    the rule, `vs_kept` (the kept epoch, the SRCC difference and its standard error) or `teacher_srcc`."""

    def __init__(self, out, save, batch_size: int, phase_of, rule: str = "best", agreement_patience: int = 0,
                 validated: bool = True):
        """phase_of: 1-based epoch -> `probe`, `partial` or `full` (0: the warm start). agreement_patience: 0 never
        stops the run. validated: False without val images (see `BestBySRCC`)."""
        super().__init__(out, save, batch_size, validated)
        self.phase_of, self.rule, self.agreement_patience = phase_of, rule, agreement_patience
        self.kept: dict | None = None  # epoch, phase, val predictions

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not trainer.sanity_checking and self.agreement_ran_out():
            trainer.should_stop = True  # every process computes the same agreement, so they stop together

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.validated:
            return
        was_training = pl_module.training
        pl_module.val_predictions = (np.empty(0), np.empty(0))
        pl_module.measure_agreement()  # what validation sets otherwise
        pl_module.train(was_training)
        super().on_train_epoch_end(trainer, pl_module)
        if self.agreement_ran_out():
            trainer.should_stop = True

    def agreement_ran_out(self) -> bool:
        """Whether the last `agreement_patience` recorded epochs all agreed less with the teacher than the kept one."""
        if not self.agreement_patience or self.kept is None or self.kept.get("teacher_srcc") is None:
            return False
        return self.history[-1]["epoch"] - self.kept["epoch"] >= self.agreement_patience

    def improves(self, pl_module: pl.LightningModule, entry: dict, score: float) -> bool:
        pred, true = (np.asarray(v, np.float64) for v in pl_module.val_predictions)
        what = self.phase_of(entry["epoch"])
        better = score > self.best
        agreement = getattr(pl_module, "val_agreement", None) if self.rule == "teacher" else None
        if agreement is not None:
            entry["teacher_srcc"] = agreement
            better = self.kept is None or agreement > self.kept["teacher_srcc"]
        elif self.kept is not None and self.rule == "one-se" and COMPLEXITY[what] > COMPLEXITY[self.kept["phase"]]:
            se = srcc_difference_se(true, pred, np.asarray(self.kept["pred"]))
            entry["vs_kept"] = {"epoch": self.kept["epoch"], "diff": score - self.best, "se": se}
            better = score - self.best > se
        entry["kept"] = better
        if better:
            self.kept = {"epoch": entry["epoch"], "phase": what, "pred": pred.tolist(), "teacher_srcc": agreement}
        return entry["kept"]

    def state_dict(self) -> dict:
        return {**super().state_dict(), "kept": self.kept}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.kept = state_dict.get("kept")


def kept_epoch(history: list[dict]) -> dict:
    """The history entry `RecipeChoice` kept last (the saved model; the best val SRCC in older histories)."""
    kept = [entry for entry in history if entry.get("kept")]
    return kept[-1] if kept else best_epoch(history)


def recipe_report(history: list[dict], best_epoch: int, schedule: str, freeze_epochs: int, partial_epochs: int,
                  num_val: int, rule: str = "best", agreement: TeacherAgreement | None = None) -> dict:
    """The recipe of the kept epoch, each recipe's best val SRCC (and, rule `teacher`, best agreement with the
    teacher on `agreement`'s images) and how it was chosen (for metrics.json)."""
    scores: dict[str, float] = {}
    teacher_scores: dict[str, float] = {}
    for entry in history:
        name = phase(entry["epoch"], schedule, freeze_epochs, partial_epochs)
        if "val_srcc" in entry:  # every validated epoch; none without val images
            scores[name] = max(scores.get(name, -math.inf), entry["val_srcc"])
        if "teacher_srcc" in entry:
            teacher_scores[name] = max(teacher_scores.get(name, -math.inf), entry["teacher_srcc"])
    agreed = agreement if teacher_scores else None  # the images rule `teacher` compared the epochs on
    how = f"best epoch by SRCC on the val split ({num_val} images)"
    if rule == "one-se":
        how = ("simplest recipe (probe < partial < full) unless a more complex one beats it by more than one "
               f"standard error (paired bootstrap) on the val split ({num_val} images)")
    elif agreed is not None and agreed.on == ON_VAL:
        how = (f"best epoch by agreement (SRCC) with the teacher's predictions on the {len(agreed.rows)} val "
               "images (no unlabelled photos to hold out; their labels unused)")
    elif agreed is not None:
        how = (f"best epoch by agreement (SRCC) with the teacher on {len(agreed.rows)} held-out unlabelled "
               "photos, never trained on")
    chose = num_val or agreed is not None
    selected_on = f"{how}, epoch 0 (the warm-started probe) included" if chose else NOTHING_CHOSE
    report = {"schedule": schedule, "chosen": phase(best_epoch, schedule, freeze_epochs, partial_epochs),
              "scores": scores, "rule": rule, "selected_on": selected_on}
    if agreed is not None:
        report["teacher_scores"], report["agreement_on"] = teacher_scores, agreed.on
        if agreed.on == ON_HELD_OUT:
            report["held_out"] = len(agreed.rows)
    return report


def choice_lines(metrics: dict) -> list[str]:
    """What `iaa train-student`, `iaa fit` and `iaa taste` print about a run's metrics.json: the kept recipe and
    epoch and what chose them, and the student's share of the teacher on val (none without val images). A
    label-only baseline's lines speak of the baseline."""
    recipe, student_srcc, teacher_srcc = metrics["recipe"], metrics["best_val_srcc"], metrics.get("teacher_val_srcc")
    who = "baseline" if metrics.get("baseline") else "student"
    parts = [f"{what} per recipe: " + ", ".join(f"{k} {v:.3f}" for k, v in recipe[key].items())
             for what, key in (("val SRCC", "scores"),
                               (f"agreement with the teacher on {AGREED_ON[recipe.get('agreement_on', ON_HELD_OUT)]}",
                                "teacher_scores"))
             if recipe.get(key)]
    if not parts:  # nothing validated an epoch or agreed with the teacher: the warm start, as it is
        return [f"{who} recipe: {recipe['selected_on']}"]
    lines = [f"{who} recipe: {recipe['chosen']}, epoch {metrics['best_epoch']} kept "
             f"({'; '.join([*parts, recipe['selected_on']])})"]
    if student_srcc is None or not teacher_srcc or not math.isfinite(teacher_srcc) or teacher_srcc <= 0:
        return lines
    share = student_srcc / teacher_srcc
    lines.append(f"the {who} keeps {100 * share:.0f} % of the teacher on val (SRCC {student_srcc:.3f} vs "
                 f"{teacher_srcc:.3f})")
    if share < TEACHER_SHARE_FOR_STUDENT:
        lines.append("below 90 %: for the best accuracy score with the teacher (accuracy mode: `iaa score PHOTOS "
                     "--model TEACHER_DIR`); it runs every teacher backbone per photo, about 2-4x slower than the "
                     "student (`iaa bench` measures both on this machine)")
    return lines
