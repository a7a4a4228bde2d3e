"""Frozen pre-trained object-classification teachers and their multi-level pooled features."""
