"""The measured sections of `iaa bench`: decoding, teacher extraction, student training, scoring.

Each function adds figures to a `Report`; `photos` are real-size JPEG files (see photos.py).
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from ..data.loading import ImageFiles
from ..preprocessing import eval_transform
from .stages import binding_stage, input_stages, shared_core_limit, write_rate
from .timing import Report, images_per_second, median_fresh_run_seconds

NIMA_BACKBONE = "inception_resnet_v2"  # the architecture of pyiqa's default `nima` (299 px)


def _drain(loader: torch.utils.data.DataLoader) -> int:
    return sum(int(batch["ok"].sum()) for batch in loader)


def decode_rate(photos: list[Path], size: int, draft: bool, workers: int, repeats: int) -> float:
    """img/s of decode + whole-image resize to size x size in DataLoader workers."""
    files = ImageFiles(photos, eval_transform(size), (3, size, size), min_side=size if draft else None)
    loader = torch.utils.data.DataLoader(files, batch_size=32, num_workers=workers)
    return images_per_second(lambda: _drain(loader), repeats=repeats)


def nvjpeg_rate(photos: list[Path], size: int, repeats: int) -> float:
    """img/s of batched nvJPEG decode on the GPU + antialiased resize to size x size (bytes already in memory)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [torch.frombuffer(bytearray(Path(p).read_bytes()), dtype=torch.uint8) for p in photos]

    def run() -> int:
        for start in range(0, len(data), 64):
            for image in decode_jpeg(data[start:start + 64], mode=ImageReadMode.RGB, device="cuda"):
                torch.nn.functional.interpolate(image[None].float(), size=(size, size), mode="bilinear", antialias=True)
        torch.cuda.synchronize()
        return len(data)

    return images_per_second(run, repeats=repeats)


def bench_decode(report: Report, photos: list[Path], workers: int, repeats: int) -> dict[str, float]:
    rates = {}
    for n in sorted({0, workers}):
        where = "in the main process" if n == 0 else f"{n} DataLoader workers"
        full = report.add("decode", f"PIL full decode + resize 224, {where}", decode_rate(photos, 224, False, n, repeats))
        draft = report.add("decode", f"PIL reduced-size (draft) decode + resize 224, {where}", decode_rate(photos, 224, True, n, repeats))
        report.ratio(f"draft vs full decode, {where}", draft, full)
        rates.update(full=full, draft=draft)
    if torch.cuda.is_available():
        rates["nvjpeg"] = report.add("decode", "nvJPEG decode + resize 224 (GPU, files in page cache)", nvjpeg_rate(photos, 224, repeats))
    return rates


def _features_rate(dataset, teachers: list[str], workers: int, batch_size: int, device: str, repeats: int,
                   load_seconds: float, hflip: bool = False) -> float:
    """img/s of `extract_features` (the real path) over `dataset`, its teacher loading time taken out."""
    from ..features import ExtractionSettings, extract_features

    seconds = median_fresh_run_seconds(lambda tmp: extract_features(
        dataset, tmp / "cache", ExtractionSettings(tuple(teachers), batch_size=batch_size, num_workers=workers,
                                                   device=device, hflip=hflip, progress=False)), repeats)
    return len(dataset.records) / (seconds - load_seconds)


def _startup_seconds(report: Report, dataset, teachers: list[str], workers: int, batch_size: int, device: str) -> float:
    """Seconds from calling `extract_features` to its first batch written (model loading included)."""
    from ..data.records import Dataset

    first = Dataset(dataset.name, dataset.root, dataset.records[:batch_size])
    rate = _features_rate(first, teachers, workers, batch_size, device, 1, 0.0)
    seconds = report.add("teachers", f"start to first features batch ({len(first.records)} photos, model loading "
                         "included)", len(first.records) / rate, unit="s")
    report.ratio("features start-up: goal 3 s / measured", 3.0, seconds, goal=1.0)
    return seconds


def bench_teachers(report: Report, photos: list[Path], teachers: list[str], workers: int, batch_size: int,
                   repeats: int, device: str) -> dict[str, float]:
    """The real `iaa features` path (every teacher in one pass): start-up, stages, end to end, binding stage."""
    from ..data.folder import read_folder
    from ..inputs import resolve_decoder
    from ..teachers import load_teachers

    dev = torch.device(device)
    dataset = read_folder(photos[0].parent)
    startup = _startup_seconds(report, dataset, teachers, workers, batch_size, device)
    start = time.perf_counter()
    teacher_set = load_teachers(teachers, device=dev)
    load_seconds = report.add("teachers", f"loading the {len(teachers)} teachers", time.perf_counter() - start, unit="s")
    inputs = [torch.rand(batch_size, 3, t.input_size, t.input_size, device=dev) for t in teacher_set.teachers]

    def compute(models, batch) -> int:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            models(batch)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return batch_size

    for teacher, batch in zip(teacher_set.teachers, inputs):
        report.add("teachers", f"{teacher.name} MLSP compute only, batch {batch_size}, {teacher.input_size} px",
                   images_per_second(lambda t=teacher, b=batch: compute(t, b), repeats=repeats))
    stages = input_stages(report, "teachers", photos, [(t.input_size, t.interpolation) for t in teacher_set.teachers],
                          dev, resolve_decoder("auto", dev), workers, batch_size, repeats)
    stages["compute"] = report.add("teachers", f"stage compute: the {len(teachers)} teachers together, batch {batch_size}",
                                   images_per_second(lambda: compute(teacher_set, inputs), repeats=repeats))
    stages["write"] = report.add("teachers", "stage write: float16 feature rows, fsynced per batch",
                                 write_rate((teacher_set.dim,), np.float16, len(photos), batch_size, repeats))
    end_to_end = report.add("teachers", f"iaa features, {len(teachers)} teachers in one pass, end to end (loading "
                            "excluded)", _features_rate(dataset, teachers, workers, batch_size, device, repeats, load_seconds))
    limit = min(stages["read"], stages["resize"], stages["compute"])
    report.ratio("features end to end vs min(decode limit, compute)", end_to_end, limit, goal=0.8)
    binding_stage(report, "features", stages, end_to_end, None)
    rates = {"end_to_end": end_to_end, "startup": startup, **stages}
    if dev.type == "cuda":  # hflip doubles the compute, never the input
        rates["hflip"] = report.add("teachers", "iaa features with hflip, end to end", _features_rate(
            dataset, teachers, workers, batch_size, device, repeats, load_seconds, hflip=True))
        report.ratio("features with hflip vs min(decode limit, compute / 2)", rates["hflip"],
                     min(stages["read"], stages["resize"], stages["compute"] / 2), goal=0.8)
    return rates


class _StepRate(Callback):
    """Images per second of the training steps after the first (compilation, allocator and worker start-up)."""

    def __init__(self, batch_size: int):
        self.batch_size, self.start, self.rate = batch_size, 0.0, 0.0

    def _sync(self, trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step == 1:
            self.start = self._sync(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.rate = (trainer.global_step - 1) * self.batch_size / max(self._sync(trainer) - self.start, 1e-9)


def _fit_rate(config, student_config, steps: int, device: str, **data) -> float:
    """img/s of `steps` real StudentModule training steps under Lightning (`data`: datamodule or train_dataloaders)."""
    import lightning.pytorch as pl

    from ..training.spine import lightning_device, quiet_lightning
    from ..training.student import StudentModule

    quiet_lightning()
    accelerator, devices = lightning_device(device)
    timer = _StepRate(config.batch_size)
    trainer = pl.Trainer(max_steps=steps + 1, accelerator=accelerator, devices=devices, limit_val_batches=0,
                         precision="bf16-mixed" if accelerator == "gpu" else "32-true", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[timer])
    trainer.fit(StudentModule(asdict(student_config), asdict(config)), **data)
    return timer.rate


def bench_image_cache(report: Report, photos: list[Path], workers: int, batch_size: int, repeats: int, device: str,
                      size: int = 256, interpolation: str = "bicubic") -> dict[str, float]:
    """The image-cache build (its decoder, grouped resize, row store): stages and end to end."""
    from ..data.records import ImageRecord
    from ..inputs import resolve_decoder
    from ..training.image_cache import ensure_image_cache

    dev = torch.device(device)
    decoder = resolve_decoder("auto", dev)
    stages = input_stages(report, "cache", photos, [(size, interpolation)], dev, decoder, workers, batch_size, repeats)
    stages["write"] = report.add("cache", f"stage write: {size} px uint8 rows, fsynced per batch",
                                 write_rate((size, size, 3), np.uint8, len(photos), batch_size, repeats))
    records = [ImageRecord(p.name, p, "bench") for p in photos]
    seconds = median_fresh_run_seconds(lambda tmp: ensure_image_cache(
        records, size, interpolation, root=tmp, num_workers=workers, batch_size=batch_size, device=device), repeats)
    end_to_end = report.add("cache", f"image cache build from JPEG files ({size} px), end to end", len(records) / seconds)
    report.ratio(f"image cache build vs its decode limit ({decoder} decoder)", end_to_end,
                 min(stages["read"], stages["resize"]), goal=0.8)
    binding_stage(report, "image cache", stages, end_to_end, None)
    return {"end_to_end": end_to_end, **stages}


def bench_training(report: Report, photos: list[Path], workers: int, batch_size: int, steps: int, device: str,
                   backbone: str = "tf_efficientnet_lite0", compile_model: bool = False) -> dict[str, float]:
    """The real student LightningModule under `Trainer.fit`: in-memory batches vs the real image-cache datamodule."""
    from ..data.records import ImageRecord
    from ..student import StudentConfig
    from ..data.table import SplitTable
    from ..training.datamodule import StudentDataModule
    from ..training.image_cache import ensure_image_cache
    from ..training.student_config import StudentTrainConfig

    student_config = StudentConfig.for_backbone(backbone)
    # full fine-tuning from the first step: the speed of an end-to-end epoch (a frozen-backbone one is faster)
    config = StudentTrainConfig(backbone=backbone, pretrained=False, batch_size=batch_size, alpha=0.0, beta=0.0,
                                compile=compile_model, num_workers=workers, progress=False, finetune="full",
                                freeze_epochs=0)
    size, k = student_config.input_size, student_config.output_dim
    batch = {"image": torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8),
             "label": torch.full((batch_size, k), 1.0 / k), "mean": torch.full((batch_size,), 5.0)}
    label = f"{backbone} {size} px batch {batch_size}" + (" compiled" if compile_model else "")
    fixed = torch.utils.data.DataLoader([batch] * (steps + 1), batch_size=None)
    compute_rate = report.add("training", f"StudentModule fit, in-memory batches ({label})",
                              _fit_rate(config, student_config, steps, device, train_dataloaders=fixed))

    records = [ImageRecord(p.name, p, "bench") for p in photos]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cache = ensure_image_cache(records, student_config.train_resize, root=tmp, num_workers=workers)
        report.add("training", f"image cache build from JPEG files ({student_config.train_resize} px, once per dataset)",
                   len(records) / (time.perf_counter() - start))
        n = len(records)
        ids = [r.image_id for r in records]
        split = SplitTable(ids, cache.rows_for(ids), np.full((n, k), 1.0 / k, dtype=np.float32),
                           np.full(n, 5.0, dtype=np.float32), source=cache.path)
        data = StudentDataModule(split, split, student_config.train_resize, size, batch_size, num_workers=workers)
        cached_rate = report.add("training", f"StudentModule fit on the image-cache datamodule ({label}, {workers} "
                                 "workers)", _fit_rate(config, student_config, steps, device, datamodule=data))
        loader = data.train_dataloader()
        loader_rate = report.add("training", f"image-cache loader alone ({workers} workers)", images_per_second(
            lambda: sum(len(b["image"]) for b in loader), repeats=2))
    report.ratio(f"training from files vs compute only ({label})", cached_rate, compute_rate, goal=0.9)
    return {"compute": compute_rate, "from_files": cached_rate, "loader": loader_rate}


def _student_dir(root: Path, backbone: str, pretrained: bool) -> Path:
    from ..student import Student, StudentConfig

    config = StudentConfig.for_backbone(backbone)
    model = Student.create(config, pretrained=pretrained)
    return model.save_pretrained(root / backbone)


def bench_scoring(report: Report, photos: list[Path], workers: int, device: str, batch_sizes: tuple[int, ...],
                  nima: bool = True, int8: bool = True) -> dict[str, float]:
    """`iaa score` end to end from JPEG files: default student (torch; on the CPU ONNX Runtime fp32, what
    `--backend auto` runs, and int8 calibrated on these photos) vs the NIMA architecture; each engine's stages
    at its best batch size."""
    from ..scoring import Scorer
    from ..scoring.onnx_export import export_onnx

    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        default_dir = _student_dir(root, "tf_efficientnet_lite0", pretrained=True)
        scorers = {"student torch": Scorer.from_pretrained(default_dir, device=device, backend="torch")}
        if device == "cpu":
            onnx_path = export_onnx(default_dir, root / "student.onnx")
            scorers["student onnxruntime"] = Scorer.from_pretrained(default_dir, device=device, backend="onnx", onnx_path=onnx_path)
            if int8:
                scorers["student onnxruntime int8"] = _int8_scorer(report, default_dir, photos, root, workers)
        for name, scorer in scorers.items():
            rates.update(_engine_rates(report, name, scorer, photos, workers, batch_sizes))
        if "student onnxruntime best" in rates:
            report.ratio("ONNX Runtime vs PyTorch (best batch)", rates["student onnxruntime best"], rates["student torch best"])
            rates.update(_one_thread(report, default_dir, onnx_path, photos, workers,
                                     int(rates["student onnxruntime best batch"]), rates["student onnxruntime best"]))
        if "student onnxruntime int8 best" in rates:
            report.ratio("int8 vs fp32 ONNX Runtime (best batch)", rates["student onnxruntime int8 best"],
                         rates["student onnxruntime best"])
        if nima:
            nima_dir = _student_dir(root, NIMA_BACKBONE, pretrained=False)  # random weights: timing only
            nima_scorer = Scorer.from_pretrained(nima_dir, device=device, backend="torch")
            bs = max(batch_sizes)
            nima_scorer.score_paths(photos[:32], batch_size=bs, num_workers=workers)  # warm-up on a few photos
            rates["nima"] = report.add("scoring", f"NIMA architecture ({NIMA_BACKBONE}, 299 px, random weights), batch {bs}", images_per_second(
                lambda: len(nima_scorer.score_paths(photos, batch_size=bs, num_workers=workers)), repeats=2, warmup=0))
            default = "student onnxruntime best" if device == "cpu" else "student torch best"  # --backend auto
            report.ratio("iaa score (default student, --backend auto) vs NIMA architecture, end to end", rates[default],
                         rates["nima"], goal=10.0)
            if "student onnxruntime int8 best" in rates:
                report.ratio("iaa score, int8 student vs NIMA architecture, end to end",
                             rates["student onnxruntime int8 best"], rates["nima"], goal=30.0)
    return rates


def _int8_scorer(report: Report, model_dir: Path, photos: list[Path], root: Path, workers: int):
    """The int8 model that `iaa export onnx --int8` saves for `model_dir` calibrated on `photos` (its default bounds,
    ranked on the bench photos held out from calibration), its drift reported; when the export refuses every
    scheme (the bench's head is random), the fastest scheme, and the rows say so."""
    from ..errors import IAAError
    from ..scoring import Scorer
    from ..scoring.quantize import quantize_onnx, split_held_out

    calibration, held_out = split_held_out([str(p) for p in photos])
    out = root / "student-int8.onnx"
    try:
        drift, timed = quantize_onnx(model_dir, out, calibration, held_out, workers=workers), "what --int8 saves"
    except IAAError:
        drift = quantize_onnx(model_dir, out, calibration, held_out, max_rank_loss=1.0, extra_blocks=0, workers=workers)
        timed = "--int8 refused every scheme; the fastest"
    label = f"int8 timed below ({timed}: {drift.scheme})"
    report.add("scoring", f"{label}: SRCC lost against fp32's ranking ({drift.held_out} held-out bench photos, no labels)",
               drift.rank_loss, "")
    report.add("scoring", f"{label}: mean |score difference| vs fp32", drift.mean_abs_difference, "")
    return Scorer.from_pretrained(model_dir, device="cpu", backend="onnx", onnx_path=out)


def _engine_rates(report: Report, name: str, scorer, photos: list[Path], workers: int,
                  batch_sizes: tuple[int, ...]) -> dict[str, float]:
    """Batch 1 and each batch size end to end; then the stages at the best batch size, against its rate."""
    few = photos[: min(len(photos), 32)]
    scorer.score_paths(few, batch_size=max(batch_sizes), num_workers=workers)  # warm-up on a few photos
    rates = {f"{name} batch 1": report.add("scoring", f"{name}, batch 1 (latency mode), {workers} workers", images_per_second(
        lambda: len(scorer.score_paths(few, batch_size=1, num_workers=workers)), repeats=2))}
    by_batch = {bs: report.add("scoring", f"{name}, batch {bs}", images_per_second(
        lambda b=bs: len(scorer.score_paths(photos, batch_size=b, num_workers=workers)), repeats=2, warmup=0))
        for bs in batch_sizes}
    best = max(by_batch, key=by_batch.get)
    rates.update({f"{name} best": by_batch[best], f"{name} best batch": best})
    _scoring_stages(report, name, scorer, photos, workers, best, by_batch[best])
    return rates


def _one_thread(report: Report, model_dir: Path, onnx_path: Path, photos: list[Path], workers: int, batch_size: int,
                default: float) -> dict[str, float]:
    """`iaa score --threads 1` (the model on the one core that 2 decoding workers on 2 cores leave) against the
    default threads (one per core), at the default's best batch size."""
    from ..scoring import Scorer

    torch_threads = torch.get_num_threads()
    scorer = Scorer.from_pretrained(model_dir, device="cpu", backend="onnx", onnx_path=onnx_path, threads=1)
    scorer.score_paths(photos[:32], batch_size=batch_size, num_workers=workers)  # warm-up on a few photos
    rate = report.add("scoring", f"student onnxruntime --threads 1, batch {batch_size}", images_per_second(
        lambda: len(scorer.score_paths(photos, batch_size=batch_size, num_workers=workers)), repeats=2, warmup=0))
    report.ratio("iaa score --threads 1 vs its default threads (ONNX Runtime fp32, same batch)", rate, default)
    torch.set_num_threads(torch_threads)  # `threads` set torch's process-wide count; NIMA keeps every core
    return {"student onnxruntime --threads 1": rate}


def _scoring_stages(report: Report, name: str, scorer, photos: list[Path], workers: int, batch_size: int,
                    end_to_end: float) -> None:
    """Stages of `iaa score` with this engine at `batch_size`: read/decode, resize, compute; the end-to-end
    rate at that batch size against the binding one (goal 0.8)."""
    from ..inputs import resolve_decoder

    size = scorer.config.input_size
    stages = input_stages(report, "scoring", photos, [(size, scorer.config.interpolation)], scorer.device,
                          resolve_decoder("auto", scorer.device), workers, batch_size, 1)
    batch = torch.rand(batch_size, 3, size, size)
    stages["compute"] = report.add("scoring", f"stage compute: {name}, batch {batch_size}", images_per_second(
        lambda: len(scorer.predict_batch(batch)[0]), repeats=2))
    binding_stage(report, f"iaa score, {name}, batch {batch_size}", stages, end_to_end, 0.8)
    if scorer.device.type == "cpu":
        shared_core_limit(report, f"iaa score, {name}, batch {batch_size}", stages, end_to_end)


def machine_info(device: str) -> dict:
    import platform

    info = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "device": device, "torch_threads": torch.get_num_threads(),
            "load_average": [round(v, 2) for v in os.getloadavg()]}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
