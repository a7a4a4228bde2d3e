"""iaa-distill: image aesthetics assessment distilled from object-classification networks."""
__version__ = "0.1.0"
