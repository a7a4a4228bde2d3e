"""Run the benchmark sections, print every figure and ratio, write `bench.json` and `bench.md`."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from ..artifacts import atomic_write_text
from ..teachers import DEFAULT_TEACHERS
from .culling import QUICK_CULL_PHOTOS, bench_culling
from .photos import write_benchmark_photos
from .startup import bench_cli
from .sections import bench_decode, bench_image_cache, bench_scoring, bench_teachers, bench_training, machine_info
from .stages import binding_stage
from .teacher_scoring import bench_teacher_scoring
from .timing import Report

# culling: only when asked (--sections culling)
SECTIONS = ("cli", "decode", "teachers", "cache", "training", "scoring", "culling")
AVA_IMAGES, AVA_TRAIN, AVA_TEST = 255_500, 235_500, 19_930


def run_bench(out: str | Path = "bench", photos: int = 96, sections: tuple[str, ...] = SECTIONS, device: str = "auto",
              workers: int | None = None, repeats: int = 3, quick: bool = False, ava_epochs: int = 15,
              cull_photos: int = 200, show: Callable[[str], None] | None = None) -> Report:
    """Measure on this machine; `quick` shrinks every section (a smoke run, not for reporting). Each line of the
    report goes to `show` as it is measured (default: the `iaa_distill.bench` logger)."""
    import os

    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    workers = workers if workers is not None else min(16, os.cpu_count() or 1)
    out = Path(out)
    report = Report(machine_info(device), **({"show": show} if show else {}))
    report.show(f"iaa bench on {report.machine}")
    if "cli" in sections:
        bench_cli(report, repeats)
    paths = write_benchmark_photos(out / "photos", photos) if set(sections) - {"cli"} else []
    if paths:
        report.show(f"  {len(paths)} photos of 800x600 in {out / 'photos'} (~{sum(p.stat().st_size for p in paths) / len(paths) / 1024:.0f} KB each)")
    gpu = device == "cuda"
    batch = 256 if gpu else (8 if quick else 32)
    repeats = 1 if quick else repeats
    start = time.perf_counter()
    rates: dict[str, dict] = {}
    if "decode" in sections:
        rates["decode"] = bench_decode(report, paths, workers, repeats)
    if "teachers" in sections:
        teachers = list(DEFAULT_TEACHERS[:1] if quick else DEFAULT_TEACHERS)
        rates["teachers"] = bench_teachers(report, paths, teachers, workers, batch, repeats, device)
    if "cache" in sections:
        rates["cache"] = bench_image_cache(report, paths, workers, batch, repeats, device)
    if "training" in sections:
        steps = 2 if quick else (20 if gpu else 3)
        rates["training"] = bench_training(report, paths, workers, batch, steps, device)
        if gpu:
            rates["training_compiled"] = bench_training(report, paths, workers, batch, steps, device, compile_model=True)
        for key in ("training", "training_compiled"):
            if key in rates:
                stages = {"read (image-cache loader)": rates[key]["loader"], "compute": rates[key]["compute"]}
                binding_stage(report, key.replace("_", " "), stages, rates[key]["from_files"], 0.9)
    if "scoring" in sections:
        sizes = (256,) if gpu else ((8,) if quick else (8, 32))
        rates["scoring"] = bench_scoring(report, paths, workers, device, sizes)
        rates["teacher_scoring"] = bench_teacher_scoring(report, paths, workers, device, sizes, rates["scoring"])
    if "culling" in sections:
        rates["culling"] = bench_culling(report, out, workers, device, QUICK_CULL_PHOTOS if quick else cull_photos)
    estimate = ava_estimate(rates, ava_epochs, gpus=max(8, torch.cuda.device_count()))
    if estimate:
        for n, minutes in estimate["minutes"].items():
            report.show(f"  estimate   full AVA pipeline on {n} {device} device(s): {minutes:.1f} min ({estimate['detail'][n]})")
        report.show(f"             {estimate['scaling']}")
        report.ratio("full AVA on one device: goal 20 min / estimate", 20.0, estimate["minutes"][1], goal=1.0)
    report.machine["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    report.show(f"  load average (1, 5, 15 min) at the start {report.machine['load_average']}, at the end "
          f"{report.machine['load_average_at_end']}: on a shared machine compare the ratios, not the rates")
    write(report, out, estimate, time.perf_counter() - start)
    return report


def ava_estimate(rates: dict[str, dict], epochs: int, gpus: int = 8) -> dict | None:
    """Minutes for features + image cache + student and baseline (epochs each) + evaluation on AVA, from the
    measured rates, on one device and on `gpus` devices (features, training and scoring sharded by torchrun/DDP)."""
    if not all(k in rates for k in ("teachers", "training", "scoring")):
        return None
    train = rates.get("training_compiled", rates["training"])["from_files"]
    score = max(v for k, v in rates["scoring"].items() if k.endswith("best"))
    sharded = {
        "features": AVA_IMAGES / rates["teachers"]["end_to_end"],
        "student_and_baseline": 2 * epochs * AVA_TRAIN / train,
        "evaluation": 2 * AVA_TEST / score,
    }
    once = {"image_cache": AVA_IMAGES / rates["cache"]["end_to_end"]} if "cache" in rates else {}  # one builder
    minutes, detail = {}, {}
    for n in (1, gpus):
        seconds = {**{k: v / n for k, v in sharded.items()}, **once}
        minutes[n] = sum(seconds.values()) / 60
        detail[n] = ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items())
    scaling = ("DDP/torchrun scaling assumed linear: not measured here (one device)" if torch.cuda.device_count() < 2
               else "DDP/torchrun scaling assumed linear: measure it with torchrun on this machine")
    return {"minutes": minutes, "detail": detail, "epochs": epochs, "scaling": scaling,
            "total_hours": minutes[1] / 60}


def _goal(ratio: dict) -> str:
    return ratio["verdict"] if ratio["goal"] is None else f">= {ratio['goal']:g}: {ratio['verdict']}"


def write(report: Report, out: Path, estimate: dict | None, seconds: float) -> None:
    document = {"machine": report.machine, "results": [asdict(r) for r in report.results], "ratios": report.ratios,
                "ava_estimate": estimate, "seconds": seconds}
    atomic_write_text(out / "bench.json", json.dumps(document, indent=2) + "\n")
    lines = ["# iaa bench", "", f"Machine: {report.machine}", "", "| section | figure | value |", "|---|---|---|"]
    lines += [f"| {r.section} | {r.name} | {r.value:.1f} {r.unit} |" for r in report.results]
    lines += ["", "| ratio | value | goal |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['value']:.2f}x | {_goal(r)} |" for r in report.ratios]
    if estimate:
        lines += ["", f"Full AVA pipeline estimated from these rates ({estimate['epochs']} student epochs, student + "
                  f"baseline; {estimate['scaling']}):", ""]
        lines += [f"- {n} device(s): **{m:.1f} min** ({estimate['detail'][n]})" for n, m in estimate["minutes"].items()]
    atomic_write_text(out / "bench.md", "\n".join(lines) + "\n")
    report.show(f"\nwrote {out / 'bench.json'} and {out / 'bench.md'} ({seconds:.0f} s)")
