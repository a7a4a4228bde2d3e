"""User-facing errors: each one is a single line that names the file or row and what to do."""


class IAAError(Exception):
    """An expected failure (bad input, missing file, mismatched cache). The CLI prints it without a traceback."""


class DatasetError(IAAError):
    """A label file, split list or dataset folder is unusable."""


class DecodeError(IAAError):
    """One image could not be decoded; long runs report and skip it."""


class WeightsNotFoundError(IAAError):
    """No pretrained weights were found for a teacher or student backbone."""
