"""`Scorer`: a trained model (PyTorch or its ONNX export) behind one call that scores photos.

The model is a student (speed) or a teacher folder: the frozen teachers + the trained teacher head
(accuracy mode, `teacher_model`). Preprocessing comes from the model's own config: the shared decoder
(reduced-size JPEG decode to `input_size`), then the whole image resized to `input_size` x `input_size`
(`inputs.prepare`: one path for files and in-memory images alike); for a teacher, to every teacher's own size,
packed into one row.
Inference runs under `torch.inference_mode` with the model in eval mode and no shared mutable state,
so one `Scorer` can be called from several threads at once.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image

from ..artifacts import model_name, read_config
from ..devices import resolve_device
from ..errors import DecodeError, IAAError
from ..imaging import DEFAULT_MAX_PIXELS, decode_image
from ..inputs import Prepared, Visit, pack, prepare
from ..settings import differences, identity
from ..student import Student, StudentConfig
from ..teacher_head import KIND as TEACHER_KIND, TeacherHeadConfig
from ..teacher_model import TeacherScorerModel, TeacherScoringConfig
from .onnx_metadata import DEFAULT_ONNX_NAME, EMBEDDING_OUTPUT, config_from_metadata
from .result import Result

ScoreInput = str | Path | bytes | BinaryIO | Image.Image | torch.Tensor | np.ndarray
ScoringConfig = StudentConfig | TeacherScoringConfig
ScoringModel = Student | TeacherScorerModel


ScoreResult = Result  # the name before `Result`; callers may use either
Outputs = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]  # mean (B,), distribution (B, K), embedding (B, F)


class _TorchBackend:
    def __init__(self, model: ScoringModel, device: torch.device):
        self.model = model.to(device).eval()
        self.device = device
        self.name = "torch"

    def __call__(self, images: torch.Tensor, embed: bool = False) -> Outputs:
        images = images.to(self.device, non_blocking=True)
        with torch.inference_mode(), torch.autocast("cuda", enabled=self.device.type == "cuda"):
            raw, feature = self.model(images)
            mean, dist = self.model.config.space.decode(raw)
        return (mean.float().cpu().numpy(), None if dist is None else dist.float().cpu().numpy(),
                feature.float().cpu().numpy() if embed else None)


def onnx_session(path: Path, device: torch.device = torch.device("cpu"), threads: int | None = None):
    """An ONNX Runtime session of `path` (CUDA first on a CUDA device), `threads` intra-op threads (None: one per
    core); IAAError naming the file when it cannot be loaded."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    # idle threads sleep: spinning ones take the cores from the decoding workers beside them (measured: 1.3x
    # the CPU per photo of `iaa score` and 0.78x its speed with 2 workers on 2 cores)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
        raise IAAError(f"{path}: cannot load ONNX model ({str(exc).splitlines()[0]})") from None


class _OnnxBackend:
    def __init__(self, path: Path, device: torch.device, threads: int | None = None):
        self.path = path
        self.session = onnx_session(path, device, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.name = "onnx"

    def __call__(self, images: torch.Tensor, embed: bool = False) -> Outputs:
        if embed and EMBEDDING_OUTPUT not in self.outputs:
            raise IAAError(f"{self.path}: exported without the embedding output; re-export it with iaa export onnx")
        values = self.session.run(None, {self.input_name: images.float().cpu().numpy()})
        named = dict(zip(self.outputs, values))
        return named["mean"].astype(np.float32), named.get("distribution"), named.get(EMBEDDING_OUTPUT) if embed else None


class Scorer:
    """Scores photos with a trained student or teacher head. Build it with `Scorer.from_pretrained(model_dir)`."""

    def __init__(self, config: ScoringConfig, backend: _TorchBackend | _OnnxBackend, max_pixels: int = DEFAULT_MAX_PIXELS,
                 name: str = "model"):
        self.config = config
        self.backend = backend
        self.max_pixels = max_pixels
        self.name = name
        self._input_shape = input_shape(config)
        self.space = config.space
        # latency mode: decoding threads started once and kept warm (threads start on first use)
        self._pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="iaa-decode")

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path | None,
        device: str = "auto",
        backend: str = "auto",
        onnx_path: str | Path | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        threads: int | None = None,
        revision: str | None = None,
    ) -> "Scorer":
        """Load a student folder (config.json + model.safetensors), or a teacher folder (`iaa train-teacher`'s
        output: the head, scored with its frozen teachers loaded offline), or a hub name `org/name` at `revision`
        (a branch, tag or commit; see `scoring.hub`: the local Hugging Face cache first, offline-safe).

        backend='auto' (default): onnxruntime on the CPU, from `onnx_path` or else the model's cached export
        (`scoring.onnx_cache`: made once, keyed by the weights' hash; PyTorch when it cannot be made), and
        PyTorch on a GPU. backend='onnx' runs `onnx_path` (default: `model_dir/model.onnx`) with onnxruntime; its
        preprocessing comes from `model_dir`'s config, or from the ONNX metadata when `model_dir` is None.
        threads: CPU threads for inference (onnx: the session's intra-op threads, which always sleep rather than
        spin when idle, as decoding workers share the cores; torch: process-wide `torch.set_num_threads`, which for
        onnx sizes the batch resize); None keeps the engines' defaults (onnx: one per physical core). `threads_beside(workers)` fits them to the cores
        that decoding workers leave.
        """
        from .hub import is_hub_name, resolve_model

        shown = str(model_dir) if model_dir is not None and is_hub_name(model_dir) else None
        model_dir = None if model_dir is None else resolve_model(model_dir, revision)
        torch_device = resolve_device(device)
        if backend == "auto":
            backend, onnx_path = _auto_engine(model_dir, torch_device, onnx_path)
        if threads:
            torch.set_num_threads(threads)
        if backend == "torch":
            if model_dir is None:
                raise IAAError("the torch backend needs a model folder (--model DIR)")
            model = load_scoring_model(model_dir)
            return cls(model.config, _TorchBackend(model, torch_device), max_pixels, shown or model_name(model_dir))
        if backend != "onnx":
            raise IAAError(f"unknown backend '{backend}' (use auto, torch or onnx)")
        if onnx_path is None:
            if model_dir is None:
                raise IAAError("the onnx backend needs --onnx FILE or a model folder holding model.onnx")
            onnx_path = Path(model_dir) / DEFAULT_ONNX_NAME
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise IAAError(f"{onnx_path}: ONNX file not found (create it with: iaa export onnx --model DIR --out FILE)")
        onnx_backend = _OnnxBackend(onnx_path, torch_device, threads)
        embedded = config = config_from_metadata(onnx_backend.metadata, onnx_path)
        if model_dir is not None:
            config = _read_config(model_dir)
            changed = differences(identity(embedded), identity(config))
            if changed:
                raise IAAError(f"{onnx_path}: exported from a different model than {model_dir} "
                               f"({'; '.join(changed[:3])}, from the file to the folder); re-export it")
        return cls(config, onnx_backend, max_pixels, shown or (model_name(model_dir) if model_dir else onnx_path.stem))

    @property
    def device(self) -> torch.device:
        return getattr(self.backend, "device", torch.device("cpu"))

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one preprocessed image: (3, S, S), or (numel,) for a teacher's packed row."""
        return self._input_shape

    def __repr__(self) -> str:
        c = self.config
        return (f"Scorer(model={self.name!r}, backbone={c.backbone!r}, scale={tuple(c.scale)}, "
                f"levels={c.num_levels}, input_size={c.input_size}, device='{self.device}', backend={self.backend.name!r})")

    # -- preprocessing -------------------------------------------------------------------------
    def preprocess(self, item: ScoreInput, name: str) -> torch.Tensor:
        """One input -> `output_shape` float tensor in [0, 1], as `score` makes it. Raises DecodeError for
        unusable input, TypeError for an unsupported type."""
        prepared = self._prepare([item], [name])
        if prepared.errors:
            raise DecodeError(prepared.errors[0])
        return self.model_input(prepared.images)[0]

    def decode(self, item: ScoreInput, name: str) -> np.ndarray:
        """One input -> upright RGB uint8 HxWx3 array, what the file path's workers make of a file.

        Every input type becomes this array and then takes the batched path's resize (`inputs.prepare`), so an
        image scores the same as a path, bytes, file object, PIL image, uint8 or float array or tensor (JPEG files
        larger than twice the input size excepted: they are decoded at reduced size, which changes the pixels
        slightly)."""
        if isinstance(item, (str, Path, bytes, bytearray)) or _is_file_like(item):
            item = decode_image(item, min_side=self.config.input_size, max_pixels=self.max_pixels, name=name)
        elif isinstance(item, torch.Tensor):
            item = _tensor_to_array(item, name)
        if isinstance(item, np.ndarray):
            item = _array_to_image(item, name)
        if isinstance(item, Image.Image):
            return np.asarray(item.convert("RGB"))
        raise TypeError(f"cannot score an object of type {type(item).__name__} ({name}); "
                        "give a path, bytes, a file object, a PIL image, a numpy array or a tensor")

    def _prepare(self, items: Sequence[ScoreInput], names: Sequence[str]) -> Prepared:
        """Decode `items` (in the warm thread pool when several) into one batch of the batched input path."""
        decoded = list(self._pool.map(self._decoded_or_error, items, names)) if len(items) > 1 else \
            [self._decoded_or_error(items[0], names[0])]
        good = [(i, d) for i, d in enumerate(decoded) if not isinstance(d, str)]
        errors = [(i, d) for i, d in enumerate(decoded) if isinstance(d, str)]
        return prepare(pack(good, [], errors), self.device, self._output_sizes(), names, self.config.input_size)

    def _decoded_or_error(self, item: ScoreInput, name: str) -> np.ndarray | str:
        try:
            return self.decode(item, name)
        except DecodeError as exc:
            return str(exc)

    # -- inference -----------------------------------------------------------------------------
    def predict_batch(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, *output_shape) in [0, 1] -> mean scores (B,) and distributions (B, K) or None."""
        mean, dist, _ = self.backend(images)
        return mean, dist

    def _results(self, names: Sequence[str], images: torch.Tensor, embed: bool = False) -> list[Result]:
        mean, dist, feature = self.backend(images, embed=embed)
        std = self.space.std(dist, mean)
        return [Result(name, float(mean[i]), float(std[i]), None if dist is None else [float(v) for v in dist[i]],
                       embedding=None if feature is None else feature[i].astype(np.float32))
                for i, name in enumerate(names)]

    def score(
        self, inputs: ScoreInput | Sequence[ScoreInput], batch_size: int = 32, names: Sequence[str] | None = None,
        errors: str | None = None, embed: bool = False,
    ) -> Result | list[Result]:
        """Score one image -> a `Result`, or a list of them -> a list of `Result`s in input order.

        Inputs: paths, bytes, file objects, PIL images, numpy HxWx3 uint8 arrays or CHW tensors (uint8, or
        float in [0, 1]); a 4-D tensor is a batch. errors='raise' raises `DecodeError` for the first input that
        cannot be decoded; 'collect' returns it as a result with `error` set (mean NaN). The default raises
        for a single input and collects for a list. embed=True also fills each result's `embedding`.
        """
        if errors not in (None, "raise", "collect"):
            raise ValueError(f"errors must be 'raise' or 'collect', got {errors!r}")
        single = _is_single(inputs)
        items = _as_list(inputs)
        if names is None:
            names = [_default_name(item, i) for i, item in enumerate(items)]
        elif len(names) != len(items):
            raise ValueError(f"got {len(names)} names for {len(items)} inputs")
        raising = errors == "raise" or (errors is None and single)
        results: list[Result] = []
        for start in range(0, len(items), max(1, batch_size)):
            chunk = list(zip(items[start:start + batch_size], names[start:start + batch_size]))
            scored = self._score_chunk(chunk, embed)
            failed = next((r for r in scored if not r.ok), None)
            if raising and failed is not None:
                raise DecodeError(failed.error)
            results.extend(scored)
        return results[0] if single else results

    def embed(self, inputs: ScoreInput | Sequence[ScoreInput], batch_size: int = 32) -> np.ndarray:
        """The aesthetic feature (the layer the score is read from): (F,) float32 for one image, (N, F) for a
        list. Raises `DecodeError` for an input that cannot be decoded (use `score(..., embed=True)` to collect)."""
        results = self.score(inputs, batch_size=batch_size, errors="raise", embed=True)
        return results.embedding if isinstance(results, Result) else np.stack([r.embedding for r in results])

    def _score_chunk(self, chunk: list[tuple[ScoreInput, str]], embed: bool = False) -> list[Result]:
        """Decode the chunk (`_prepare`), then score it as one batch."""
        names = [name for _, name in chunk]
        batch = self._prepare([item for item, _ in chunk], names)
        out = {i: Result.failure(names[i], error) for i, error in batch.errors.items()}
        if batch.rows:
            out.update(zip(batch.rows, self._results([names[i] for i in batch.rows], self.model_input(batch.images), embed)))
        return [out[i] for i in range(len(names))]

    def iter_paths(
        self, paths: Sequence[str | Path], batch_size: int = 32, num_workers: int = 2, progress: bool = False,
        embed: bool = False, visit: Visit | None = None, stage: str = "scoring",
    ) -> Iterator[list[Result]]:
        """Score image files batch by batch through the shared batched input path; yields each batch's results
        in order (bad files give an error result, never an exception). JPEGs are decoded in batches on the GPU
        (nvJPEG) when the model runs there. Batch size 1 (latency mode) reads in the scorer's warm thread pool
        instead of starting DataLoader workers per call. `visit` does more with each decoded photo in the
        workers (`inputs.Visit`: `iaa cull`'s thumbnails); `stage` names the progress bar."""
        from ..progress import progress_bar

        names = [str(p) for p in paths]
        with progress_bar(len(names), stage, enabled=progress) as bar:
            for rows, batch in self.iter_inputs(names, batch_size, num_workers, visit):
                scored = dict(zip(batch.rows, self._results([names[r] for r in batch.rows],
                                                            self.model_input(batch.images), embed))) if batch.rows else {}
                scored.update({r: Result.failure(names[r], e) for r, e in batch.errors.items()})
                bar.update(len(rows))
                yield [scored[r] for r in rows]

    def iter_inputs(self, paths: Sequence[str], batch_size: int = 32, num_workers: int = 2,
                    visit: Visit | None = None) -> Iterator[tuple[list[int], Prepared]]:
        """The model's inputs for image files, batch by batch: (the batch's rows of `paths`, its `Prepared`
        batch, which `model_input` turns into the model's input). See `iter_paths`."""
        from ..inputs import iter_prepared, resolve_decoder

        size = max(1, batch_size)
        batches = [list(range(start, min(start + size, len(paths)))) for start in range(0, len(paths), size)]
        prepared = iter_prepared([str(p) for p in paths], batches, self._output_sizes(), self.device,
                                 decoder=resolve_decoder("auto", self.device), num_workers=num_workers,
                                 pool=self._pool if size == 1 else None, max_pixels=self.max_pixels, visit=visit)
        for batch, rows in zip(prepared, batches):
            if visit is not None:
                visit.collect(list(batch.extras.values()))
            yield rows, batch

    def _output_sizes(self) -> list[tuple[int, str]]:
        """(size, interpolation) of every image the model takes: one for a student, one per teacher."""
        if isinstance(self.config, TeacherScoringConfig):
            packed = self.config.input_transform()
            return list(zip(packed.sizes, packed.interpolations))
        return [(self.config.input_size, self.config.interpolation)]

    def model_input(self, images: list[torch.Tensor]) -> torch.Tensor:
        """uint8 batches from the input path -> the model's input in [0, 1] (a teacher's inputs packed into rows)."""
        scaled = [image.float().div_(255.0) for image in images]
        if isinstance(self.config, TeacherScoringConfig):
            return torch.cat([image.flatten(1) for image in scaled], dim=1)
        return scaled[0]

    def score_paths(
        self, paths: Sequence[str | Path], batch_size: int = 32, num_workers: int = 2, progress: bool = False,
        embed: bool = False,
    ) -> list[Result]:
        """Score image files (bad files give an error result, never an exception)."""
        return [r for batch in self.iter_paths(paths, batch_size, num_workers, progress, embed) for r in batch]


def threads_beside(workers: int) -> int:
    """Inference threads that fit beside `workers` decoding processes: the CPU cores they leave, at least 1
    (oversubscribed cores slow both the decode and the model)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - workers)


def _auto_engine(model_dir: Path | None, device: torch.device, onnx_path: str | Path | None) -> tuple[str, Path | None]:
    """`backend='auto'`: ('onnx', file) on the CPU (the given file, else the model's cached export), else torch."""
    from .onnx_cache import cached_onnx, resolve_backend

    if resolve_backend("auto", device) == "torch":
        return "torch", None
    if onnx_path is not None or model_dir is None:
        return "onnx", None if onnx_path is None else Path(onnx_path)
    _read_config(model_dir)  # not a model folder: that error, before any export
    cached = cached_onnx(model_dir)
    return ("onnx", cached) if cached is not None else ("torch", None)


def _is_file_like(item: Any) -> bool:
    return callable(getattr(item, "read", None))


def _tensor_to_array(tensor: torch.Tensor, name: str) -> np.ndarray:
    """A CHW RGB tensor (uint8, or float in [0, 1]) as an HxWx3 array."""
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise DecodeError(f"{name}: tensors must be CHW RGB (3, H, W), got shape {tuple(tensor.shape)}")
    return tensor.detach().cpu().permute(1, 2, 0).numpy()


def _array_to_image(array: np.ndarray, name: str) -> Image.Image:
    """An HxW or HxWx3/4 array (uint8, or float in [0, 1]) as a PIL image; float values are rounded to 8 bits."""
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise DecodeError(f"{name}: arrays must be HxW or HxWx3, got shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise DecodeError(f"{name}: float images must hold values in [0, 1]")
        array = np.round(array.astype(np.float64) * 255.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise DecodeError(f"{name}: images must be uint8 or float in [0, 1], got {array.dtype}")
    return Image.fromarray(np.ascontiguousarray(array))


def input_shape(config: ScoringConfig) -> tuple[int, ...]:
    """The shape of one model input: (3, S, S), or (numel,) for a teacher's packed row."""
    if isinstance(config, TeacherScoringConfig):
        return (config.input_transform().numel,)
    return (3, config.input_size, config.input_size)


def _model_kind(model_dir: str | Path) -> tuple[str, dict[str, Any]]:
    config = read_config(model_dir)
    kind = config.get("kind")
    if kind not in ("student", TEACHER_KIND):
        raise IAAError(f"{model_dir}: holds a '{kind}' model; score with a student or a teacher folder")
    return kind, config


def load_scoring_model(model_dir: str | Path) -> ScoringModel:
    """The model a folder holds: a student, or a teacher head with its frozen teachers (accuracy mode)."""
    kind, _ = _model_kind(model_dir)
    return TeacherScorerModel.from_pretrained(model_dir) if kind == TEACHER_KIND else Student.from_pretrained(model_dir)


def _read_config(model_dir: str | Path) -> ScoringConfig:
    kind, config = _model_kind(model_dir)
    if kind == TEACHER_KIND:
        return TeacherScoringConfig.from_head(TeacherHeadConfig.from_dict(config), model_dir)
    return StudentConfig.from_dict(config)


def _is_single(inputs: Any) -> bool:
    """One image (not a list of them, nor a 4-D batch tensor)."""
    if isinstance(inputs, torch.Tensor):
        return inputs.ndim != 4
    return isinstance(inputs, (str, Path, bytes, bytearray, Image.Image, np.ndarray)) or _is_file_like(inputs)


def _as_list(inputs: ScoreInput | Sequence[ScoreInput]) -> list[ScoreInput]:
    if _is_single(inputs):
        return [inputs]
    if isinstance(inputs, torch.Tensor):
        return list(inputs.unbind(0))
    if inputs is None or not isinstance(inputs, Iterable):
        raise TypeError(f"cannot score {inputs!r}: give an image (path, bytes, file object, PIL image, "
                        "array or tensor) or a list of them")
    return list(inputs)


def _default_name(item: ScoreInput, index: int) -> str:
    if isinstance(item, (str, Path)):
        return str(item)
    filename = getattr(item, "filename", "") or (getattr(item, "name", "") if _is_file_like(item) else "")
    return str(filename) if isinstance(filename, (str, Path)) and filename else f"<input {index}>"
