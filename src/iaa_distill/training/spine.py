"""The training spine shared by both stages: run folder, Trainer, best-model callback, validation correlations.

A run folder holds:

- `run.json`: the run's identity settings (`settings.identity`, never workers/devices/progress bars); a rerun
  with other identity settings is refused with the differences listed, a rerun with other execution settings
  resumes;
- `split.json`: the ids of the train and val images (copied next to the saved model, so that
  `iaa eval MODEL DATASET --split val` evaluates the same images);
- `checkpoints/last.ckpt`: the full training state after the last epoch, stamped with the run's fingerprint
  and checked against it before Lightning loads it;
- `history.json`: one line per validated epoch; `metrics.json` once the run has finished.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from ..artifacts import atomic_write_text
from ..devices import resolve_device
from ..errors import IAAError
from ..evaluation.metrics import MetricWarning, plcc, srcc
from ..settings import differences, fingerprint
from ..storage import Reuse, reuse_decision
from ..messages import get_logger
from ..data.splits import save_split

_log = get_logger(__name__)

MIN_TRAIN_IMAGES = 8  # both stages; the student needs them on top of one full batch per process
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
CHECKPOINTS = "checkpoints"
_FINGERPRINT_KEY = "iaa_run_fingerprint"


class RunFolder:
    """One training run's folder: its identity settings, split, checkpoint and results (see the module doc)."""

    def __init__(self, out: str | Path, identity: dict[str, Any]):
        self.out = Path(out).expanduser()
        self.identity = json.loads(json.dumps(identity, default=str))
        self.fingerprint = fingerprint(self.identity)

    @property
    def last_checkpoint(self) -> Path:
        return self.out / CHECKPOINTS / "last.ckpt"

    def finished(self) -> dict[str, Any] | None:
        """The metrics of a finished run with these settings, else None; a run with other settings is refused."""
        run_file, metrics = self.out / RUN_FILE, self.out / METRICS_FILE
        changes = differences(json.loads(run_file.read_text()), self.identity) if run_file.is_file() else None
        decision = reuse_decision(changes, metrics.is_file(), f"{self.out} holds a run with other settings (changed: "
                                  "{changes}); choose a new --out or delete that folder")
        return json.loads(metrics.read_text()) if decision is Reuse.UP_TO_DATE else None

    def start(self, train_ids: Sequence[str], val_ids: Sequence[str]) -> Path | None:
        """Record the settings and the split; returns the checkpoint to resume from (None: start afresh)."""
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / RUN_FILE, json.dumps(self.identity, indent=2) + "\n")
        save_split(self.out, train_ids, val_ids)
        last = self.last_checkpoint
        stamp = _checkpoint_fingerprint(last) if last.is_file() else None
        changes = None if not last.is_file() else [] if stamp == self.fingerprint else [f"run {stamp} -> now"]
        decision = reuse_decision(changes, complete=False)  # a checkpoint is an unfinished run: resumed or discarded
        if decision is Reuse.RESUME:
            _log.info(f"resuming from {last}")
            return last
        if decision is Reuse.CHANGED:
            _log.info(f"{last} belongs to another run or is damaged: starting afresh")
            shutil.rmtree(last.parent, ignore_errors=True)
        return None

    def write_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        atomic_write_text(self.out / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
        return metrics

    def history(self) -> list[dict[str, Any]]:
        path = self.out / HISTORY_FILE
        return json.loads(path.read_text()) if path.is_file() else []


def _checkpoint_fingerprint(path: Path) -> str | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True).get(_FINGERPRINT_KEY)
    except Exception:  # unreadable (killed while writing) or written by another version
        return None


class RunStamp(Callback):
    """Stamps every checkpoint with the run's fingerprint and the global torch RNG state (exact resumption)."""

    def __init__(self, run_fingerprint: str):
        self.run_fingerprint = run_fingerprint

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[_FINGERPRINT_KEY] = self.run_fingerprint
        checkpoint["torch_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])


class BestBySRCC(Callback):
    """After each validation (each training epoch, in a run without val images): append the epoch to
    `history.json`; when it improves (val SRCC), call `save(module, epoch)` on rank 0 (a module-level function or
    partial: DDP spawn pickles it)."""

    def __init__(self, out: Path, save: Callable[[pl.LightningModule, dict[str, Any]], None], batch_size: int,
                 validated: bool = True):
        """validated: False for a run without val images (the trainer runs no validation): each epoch is then
        recorded at its end, without val metrics."""
        self.out, self.save, self.batch_size, self.validated = out, save, batch_size, validated
        self.best = -math.inf
        self.history: list[dict[str, Any]] = []
        self._epoch_start, self._train_seconds, self._steps_at_start = 0.0, 0.0, 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start, self._steps_at_start = time.perf_counter(), trainer.global_step

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._train_seconds = time.perf_counter() - self._epoch_start

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.record_epoch(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.validated:
            self._train_seconds = time.perf_counter() - self._epoch_start
            self.record_epoch(trainer, pl_module)

    def record_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Record the epoch that just ended, with the metrics logged so far (val ones when validated)."""
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        images = (trainer.global_step - self._steps_at_start) * self.batch_size * trainer.world_size
        entry = {"epoch": trainer.current_epoch + 1, "step": trainer.global_step,
                 **{k: metrics[k] for k in ("val_srcc", "val_plcc", "val_loss", "train_loss") if k in metrics},
                 "train_seconds": round(self._train_seconds, 3),
                 "train_images_per_second": round(images / max(self._train_seconds, 1e-9), 1)}
        self.record(pl_module, entry, trainer.is_global_zero)

    def record(self, pl_module: pl.LightningModule, entry: dict[str, Any], is_global_zero: bool) -> None:
        """Append a validated epoch (also one validated outside Lightning, e.g. a warm start as epoch 0)."""
        self.history.append(entry)
        score = entry["val_srcc"] if math.isfinite(entry.get("val_srcc", math.nan)) else -2.0
        improved = self.improves(pl_module, entry, score)
        if improved:
            self.best = score
        if is_global_zero:
            if improved:
                self.save(pl_module, entry)
            atomic_write_text(self.out / HISTORY_FILE, json.dumps(self.history, indent=1) + "\n")

    def improves(self, pl_module: pl.LightningModule, entry: dict[str, Any], score: float) -> bool:
        """Whether `entry` (val SRCC `score`) becomes the kept model: a higher val SRCC."""
        return score > self.best

    def state_dict(self) -> dict:
        return {"best": self.best, "history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.history = state_dict["best"], state_dict["history"]


def best_epoch(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The history entry with the highest finite val SRCC (the first entry when none is finite)."""
    valid = [h for h in history if math.isfinite(h.get("val_srcc", math.nan))]
    return max(valid, key=lambda h: h["val_srcc"]) if valid else history[0]


class ValidationCorrelations:
    """Collects (predicted, true) mean scores over a validation epoch; SRCC/PLCC from `evaluation.metrics`."""

    def __init__(self) -> None:
        self.pred: list[torch.Tensor] = []
        self.true: list[torch.Tensor] = []
        self.index: list[torch.Tensor] = []

    def update(self, pred: torch.Tensor, true: torch.Tensor, index: torch.Tensor | None = None) -> None:
        """index: each image's row in the validated table, so that its prediction is known by image (any order)."""
        self.pred.append(pred.detach().float())
        self.true.append(true.detach().float())
        if index is not None:
            self.index.append(index.detach())

    def log(self, module: pl.LightningModule) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Log val_srcc (on the progress bar) and val_plcc over every rank's images; -1 where undefined.
        Returns the (predicted, true) mean scores of every val image and their table rows (None without
        `index`)."""
        columns = [torch.cat(self.pred).double(), torch.cat(self.true).double()]
        if self.index:
            columns.append(torch.cat(self.index).double())
        pairs = torch.stack(columns)
        for collected in (self.pred, self.true, self.index):
            collected.clear()
        if module.trainer.world_size > 1:
            pairs = _gather_columns(module, pairs)
        pred, true, *index = pairs.cpu().numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MetricWarning)
            values = {"val_srcc": srcc(true, pred), "val_plcc": plcc(true, pred)}
        for name, value in values.items():
            module.log(name, -1.0 if math.isnan(value) else value, prog_bar=name == "val_srcc", sync_dist=False)
        return pred, true, index[0].astype(np.int64) if index else None


def _gather_columns(module: pl.LightningModule, pairs: torch.Tensor) -> torch.Tensor:
    """(k, n) columns of every rank, row 1 the true scores (shards may differ by one image: padded with NaN, then
    dropped)."""
    longest = int(module.all_gather(torch.tensor(pairs.shape[1], device=pairs.device)).max())
    padded = torch.full((pairs.shape[0], longest), math.nan, dtype=pairs.dtype, device=pairs.device)
    padded[:, :pairs.shape[1]] = pairs
    gathered = module.all_gather(padded).transpose(0, 1).reshape(pairs.shape[0], -1)
    return gathered[:, ~torch.isnan(gathered[1])]


def lightning_device(device: str) -> tuple[str, Any]:
    """A `--device` value (auto, cpu, cuda, cuda:N; see `devices.resolve_device`) as Lightning's (accelerator, devices)."""
    resolved = resolve_device(device)
    return ("cpu", 1) if resolved.type == "cpu" else ("gpu", [resolved.index or 0])


def quiet_lightning() -> None:
    """No Lightning banners, tips or known-harmless warnings on the console."""
    warnings.filterwarnings("ignore", module="lightning|torchmetrics")
    warnings.filterwarnings("ignore", message=".*(LeafSpec|SpearmanCorrcoef|logging interval).*")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def build_trainer(out: Path, hardware: dict[str, Any], *, max_epochs: int, patience: int | None,
                  callbacks: Sequence[Callback], **trainer_kw: Any) -> pl.Trainer:
    """A quiet `pl.Trainer` writing CSV logs and `checkpoints/last.ckpt` into `out`, stopping early on val SRCC
    (patience None: no val split, so no validation and no early stopping on it).

    hardware: accelerator, devices, num_nodes, strategy, precision, deterministic (None: on for CPU runs),
    progress.
    """
    quiet_lightning()
    deterministic = hardware.get("deterministic")
    return pl.Trainer(
        default_root_dir=out, max_epochs=max_epochs, accelerator=hardware.get("accelerator", "auto"),
        devices=hardware.get("devices", "auto"), num_nodes=hardware.get("num_nodes", 1),
        strategy=hardware.get("strategy", "auto"), precision=hardware["precision"],
        deterministic=deterministic if deterministic is not None else not torch.cuda.is_available(),
        logger=CSVLogger(out, name="logs"), enable_model_summary=False, num_sanity_val_steps=0,
        enable_progress_bar=hardware.get("progress", True) and sys.stderr.isatty(),  # no bar in log files
        callbacks=[
            *callbacks,
            *([] if patience is None else [EarlyStopping("val_srcc", mode="max", patience=patience,
                                                         check_finite=False)]),
            ModelCheckpoint(dirpath=out / CHECKPOINTS, filename="last", enable_version_counter=False),
        ],
        **({"limit_val_batches": 0} if patience is None else {}), **trainer_kw,
    )


def check_counts(name: str, n_train: int, n_val: int, batch_images: int, min_val: int,
                 val_optional: bool = False, hint: str = "") -> None:
    """Refuse a split too small to train on (`batch_images` + MIN_TRAIN_IMAGES) or to validate on; no val images
    at all pass with `val_optional` (the stage then chooses without them). hint: why not, appended to the refusal
    of a run without any."""
    need = batch_images + MIN_TRAIN_IMAGES
    if n_train < need:
        raise IAAError(f"dataset '{name}': only {n_train} labelled training images, at least {need} needed")
    if n_val < min_val and not (val_optional and n_val == 0):
        raise IAAError(f"dataset '{name}': only {n_val} labelled validation images, at least {min_val} needed "
                       f"(raise --val-fraction or add a val split){hint if n_val == 0 else ''}")
