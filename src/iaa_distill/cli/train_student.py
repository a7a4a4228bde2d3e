"""Stage 2: train one end-to-end student (default tf_efficientnet_lite0 from its bundled ImageNet weights)
on the ground truth plus feature and output distillation from the teacher head's targets
(`--targets`, written by `iaa train-teacher`), or the label-only baseline (`--baseline`, the identical
run without distillation). Images are decoded once into a pre-resized cache (`--image-cache`) shared by
every run. Rerunning the same command resumes an interrupted run from OUT/checkpoints/last.ckpt.
Several GPUs: `--devices 4` (Lightning launches the processes) or
`torchrun --nproc-per-node 4 -m iaa_distill train-student ... --devices 4` (also across nodes with --num-nodes)."""
from __future__ import annotations

import argparse
import json

DEFAULTS_NOTE = "(default: %(default)s)"


def _devices(value: str) -> int | str:
    return value if value == "auto" else int(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..training.student_config import StudentTrainConfig

    d = StudentTrainConfig()
    parser.add_argument("dataset", metavar="DATASET", help="FORMAT:PATH, e.g. ava:/data/AVA or csv:labels.csv")
    parser.add_argument("--out", required=True, help="run folder (model/, metrics.json, checkpoints/, logs/)")
    parser.add_argument("--targets", help="teacher head folder holding the distillation targets")
    parser.add_argument("--baseline", action="store_true", help="label-only baseline: alpha = beta = 0; --targets is "
                        "optional there and only gives the teacher's feature size (same architecture as the student)")
    parser.add_argument("--image-cache", help="root folder of the pre-resized image caches "
                        "(default: $IAA_CACHE_DIR/images or ~/.cache/iaa_distill/images)")
    model = parser.add_argument_group("model")
    model.add_argument("--backbone", default=d.backbone, help=f"any timm model name {DEFAULTS_NOTE}")
    model.add_argument("--weights", help="local backbone weights file (else bundled / local cache)")
    model.add_argument("--input-size", type=int, help="training crop and scoring size (default: the backbone's)")
    model.add_argument("--train-resize", type=int, help="images are resized to this before the random crop "
                       "(default: input size x 256/224)")
    model.add_argument("--feature-dim", type=int, help="aesthetic-feature size (default: the teacher's)")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, default=d.epochs, help=DEFAULTS_NOTE)
    optim.add_argument("--batch-size", type=int, default=d.batch_size, help=f"per process {DEFAULTS_NOTE}")
    optim.add_argument("--backbone-lr", type=float, default=d.backbone_lr, help=DEFAULTS_NOTE)
    optim.add_argument("--head-lr", type=float, default=d.head_lr, help=DEFAULTS_NOTE)
    optim.add_argument("--weight-decay", type=float, default=d.weight_decay, help=DEFAULTS_NOTE)
    optim.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs, help=DEFAULTS_NOTE)
    optim.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio, help=f"cosine floor {DEFAULTS_NOTE}")
    optim.add_argument("--grad-clip", type=float, default=d.grad_clip, help=f"0 disables {DEFAULTS_NOTE}")
    optim.add_argument("--ema", action="store_true", help="validate and save an EMA of the weights")
    optim.add_argument("--ema-decay", type=float, default=d.ema_decay, help=DEFAULTS_NOTE)
    optim.add_argument("--patience", type=int, default=d.patience, help=f"early stopping, epochs {DEFAULTS_NOTE}")
    optim.add_argument("--seed", type=int, default=d.seed, help=DEFAULTS_NOTE)
    optim.add_argument("--no-hflip", action="store_true", help="no random horizontal flips")
    loss = parser.add_argument_group("loss")
    loss.add_argument("--alpha", type=float, default=d.alpha, help=f"feature distillation weight {DEFAULTS_NOTE}")
    loss.add_argument("--beta", type=float, default=d.beta, help=f"output distillation weight {DEFAULTS_NOTE}")
    loss.add_argument("--feature-loss", choices=("mse", "cosine"), default=d.feature_loss, help=DEFAULTS_NOTE)
    loss.add_argument("--loss", choices=("emd", "mse", "l1"), default=d.loss, help=f"ground-truth loss {DEFAULTS_NOTE}")
    loss.add_argument("--rank-weight", type=float, default=d.rank_weight, help=f"pairwise rank loss weight {DEFAULTS_NOTE}")
    run = parser.add_argument_group("hardware")
    run.add_argument("--accelerator", default=d.accelerator, help=f"auto, cpu, gpu {DEFAULTS_NOTE}")
    run.add_argument("--devices", type=_devices, default=d.devices, help=f"number of devices or auto {DEFAULTS_NOTE}")
    run.add_argument("--num-nodes", type=int, default=d.num_nodes, help=DEFAULTS_NOTE)
    run.add_argument("--strategy", default=d.strategy, help=f"Lightning strategy, e.g. ddp {DEFAULTS_NOTE}")
    run.add_argument("--precision", default=d.precision, help="auto (bf16-mixed on GPU, 32-true on CPU), "
                     "16-mixed, 32-true, ... (default: %(default)s)")
    run.add_argument("--compile", action="store_true", help="torch.compile the student")
    run.add_argument("--no-channels-last", action="store_true", help="keep NCHW memory layout")
    run.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                     help="deterministic algorithms (default: on for CPU, off on GPU)")
    run.add_argument("--num-workers", type=int, default=d.num_workers, help=f"DataLoader workers {DEFAULTS_NOTE}")
    run.add_argument("--val-fraction", type=float, default=d.val_fraction,
                     help=f"share of train carved out as val when the dataset has no val split {DEFAULTS_NOTE}")


def run(args: argparse.Namespace) -> int:
    from ..data.registry import open_dataset
    from ..training.student import train_student
    from ..training.student_config import StudentTrainConfig

    config = StudentTrainConfig(
        backbone=args.backbone, weights=args.weights, input_size=args.input_size, train_resize=args.train_resize,
        feature_dim=args.feature_dim, epochs=args.epochs, batch_size=args.batch_size, backbone_lr=args.backbone_lr,
        head_lr=args.head_lr, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
        min_lr_ratio=args.min_lr_ratio, grad_clip=args.grad_clip or None, ema=args.ema, ema_decay=args.ema_decay,
        alpha=args.alpha, beta=args.beta, feature_loss=args.feature_loss, loss=args.loss,
        rank_weight=args.rank_weight, hflip=not args.no_hflip, seed=args.seed, patience=args.patience,
        precision=args.precision, accelerator=args.accelerator, devices=args.devices, num_nodes=args.num_nodes,
        strategy=args.strategy, channels_last=not args.no_channels_last, compile=args.compile,
        deterministic=args.deterministic, num_workers=args.num_workers, val_fraction=args.val_fraction,
    )
    dataset = open_dataset(args.dataset, val_fraction=config.val_fraction, seed=config.seed)
    metrics = train_student(dataset, args.out, config, targets_dir=args.targets, baseline=args.baseline,
                            image_cache_dir=args.image_cache)
    if metrics:
        summary = {k: metrics[k] for k in ("best_val_srcc", "best_val_plcc", "best_epoch", "epochs_completed")}
        print(json.dumps({"out": args.out, "baseline": args.baseline, **summary}, indent=2))
    return 0
