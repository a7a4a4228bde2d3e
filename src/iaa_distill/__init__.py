"""iaa-distill: image aesthetics assessment distilled from object-classification networks."""
__version__ = "0.1.0"

__all__ = ["Scorer", "ScoreResult", "__version__"]


def __getattr__(name: str):
    """`from iaa_distill import Scorer` without importing torch on `import iaa_distill`."""
    if name in ("Scorer", "ScoreResult"):
        from . import scoring

        return getattr(scoring, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
