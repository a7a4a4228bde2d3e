"""iaa-distill: image aesthetics assessment distilled from object-classification networks.

The public API follows the data flow; names are imported lazily so that `import iaa_distill`
stays light (no torch until a name is used):

    open_dataset("ava:/data/AVA")                   # dataset -> records
    extract_features(dataset, "cache/")             # frozen teachers -> MLSP feature cache
    train_teacher_head(dataset, "cache/", "teacher/")   # stage 1 + distillation targets
    train_student(dataset, "student/", targets_dir="teacher/")   # stage 2 (baseline=True: labels only)
    evaluate_model("student/model", dataset, out="eval/")        # metrics, reports, plots
    Scorer.from_pretrained("student/model").score("photo.jpg")   # use the model: one photo -> one Result
"""
from importlib import import_module

__version__ = "0.1.0"

_API = {
    "open_dataset": "data.registry",
    "decode_image": "imaging",
    "load_teachers": "teachers",
    "extract_features": "features",
    "FeatureCache": "features",
    "TeacherHead": "teacher_head",
    "train_teacher_head": "training.teacher",
    "Student": "student",
    "StudentConfig": "student",
    "train_student": "training.student",
    "evaluate_model": "evaluation",
    "compare_runs": "evaluation",
    "Scorer": "scoring",
    "Result": "scoring",
    "ScoreResult": "scoring",
    "Recipe": "recipe",
    "run_recipe": "recipe",
}
__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    """Import a public name on first use (`from iaa_distill import Scorer`)."""
    if name in _API:
        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
