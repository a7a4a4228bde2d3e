"""The `iaa` command: a thin layer over the Python API. Each subcommand lives in its own module."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Collection

from .. import __version__
from ..errors import IAAError
from ..memory import keep_freed_memory
from ..messages import show_messages

# (subcommand, module in iaa_distill.cli, one-line help), in data-flow order. `main` imports only the module
# of the subcommand it runs, and modules import heavy libraries only inside run(), so `iaa --help` and
# `iaa score --help` never import torch (`iaa bench --sections cli` times them).
COMMANDS: list[tuple[str, str, str]] = [
    ("demo", "demo", "the whole method end to end on bundled photos with synthetic labels (CPU, minutes)"),
    ("data", "data", "inspect datasets: iaa data check FORMAT:PATH"),
    ("features", "features", "extract teacher features (MLSP) of a dataset into a resumable cache"),
    ("train-teacher", "train_teacher", "stage 1: train the teacher head on a feature cache and write distillation targets"),
    ("train-student", "train_student", "stage 2: train the distilled student (or --baseline) on cached images"),
    ("fit", "fit", "run every stage from a YAML recipe (features -> teacher -> student + baseline -> eval -> compare)"),
    ("taste", "taste", "learn your taste: a personal model from the star ratings in your photos' XMP (iaa taste PHOTOS --out DIR)"),
    ("eval", "evaluate", "evaluate a student or teacher head on a dataset split: metrics, per-category, reports, plots"),
    ("compare", "compare", "compare evaluation folders vs a baseline: paired bootstrap CIs, per-category gains"),
    ("score", "score", "score photos (files, folders, globs): a table or JSONL on stdout, CSV/JSONL/JSON files, embeddings, --html gallery"),
    ("cull", "cull", "cull photo folders: keep/reject by score and bursts, XMP stars, copy/link/move the picks, gallery"),
    ("export", "export", "export a trained student or teacher folder: iaa export onnx --model DIR --out model.onnx"),
    ("push", "push", "publish a model folder on the Hugging Face Hub with a model card: iaa push DIR ORG/NAME"),
    ("serve", "serve", "HTTP service + web page for a trained student or teacher folder (FastAPI + uvicorn)"),
    ("bench", "bench", "measure every speed goal on this machine and print figures and ratios"),
]


# Lightning's loggers for its banners ("GPU available"), "💡 Tip" adverts and the model summary table.
# Lightning resets its top-level logger on import, but leaves these alone: set them before it is imported.
LIBRARY_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
    "lightning.pytorch.callbacks.model_summary",
    "lightning.pytorch.utilities.model_summary",
)


def quiet_libraries() -> None:
    """Hide library banners, tips and deprecation chatter that say nothing to the user of a command."""
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*(LeafSpec|SpearmanCorrcoef|logging interval).*")


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The `iaa` parser. Every subcommand is listed; only those in `commands` (default: all) get their arguments,
    which imports their module."""
    parser = argparse.ArgumentParser(
        prog="iaa",
        description="Image aesthetics assessment distilled from object-classification networks "
        "(Hou et al., TCSVT 2022): datasets, teacher features, training, evaluation, scoring and serving.",
    )
    parser.add_argument("--version", action="version", version=f"iaa-distill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        if commands is not None and name not in commands:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(f".{module_name}", __name__)
        command = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The subcommand named in `argv`: its first word that is not an option (`iaa` has no option with a value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser({_command_in(argv)} - {None})
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    quiet_libraries()
    if args.command != "serve":  # a long-lived service gives memory back; batch commands keep it for reuse
        keep_freed_memory()
    show_messages()  # the library logs; the command shows its messages on stdout
    try:
        return int(args._run(args) or 0)
    except IAAError as exc:
        print(f"iaa: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # stdout closed early (iaa score ... | head): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 0
    except OSError as exc:  # last resort: outputs are checked up front, but disks fill up and files vanish
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"iaa: error: {where}{exc.strerror or exc}; check the path and its permissions", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("iaa: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
