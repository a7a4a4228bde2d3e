"""Int8 ONNX: static quantisation (onnxruntime.quantization, QDQ, uint8 activations, per-channel 7-bit weights,
MinMax calibration) of a student or a teacher folder, calibrated on a few hundred photos, saved only when it
keeps the fp32 model's ranking.

The photos (a folder of the user's photos or a dataset's training images, a seeded sample) are split in two:
most calibrate, the rest (`held_out_share`, at most `HELD_OUT_IMAGES`) are held out, and on them the int8 model's
ranking is compared with fp32's: its rank loss is 1 - SRCC(int8, fp32). No labels are needed, and hundreds of
photos measure it far more steadily than a labelled split of a few dozen; when a labelled split is given, the
SRCC drop against its labels is checked too. uint8 activations with 7-bit weights (`reduce_range`) run ONNX
Runtime's fast u8 x s8 kernels on an AVX2 CPU without VNNI (8-bit weights saturate their 16-bit sums there, and
symmetric int8 activations run slower than fp32), so every scheme uses them and the schemes differ in what
stays fp32: the first `fp32_early` of each backbone's convolutions (its stem and first blocks: their 7-bit weights carry
most of the error; with them int8 a demo student lost 0.048 of fp32's ranking, and 0.003 with 30 % fp32),
the MLSP pooling taps and everything after the last convolution (the head), and then the blocks whose error
shows most in the scores, chosen by greedy forward selection on the calibration photos (each step keeps fp32
the block that leaves the least noise in the scores against fp32's); the schemes add them one by one
(`EXTRA_FP32_BLOCKS`), and that search runs only when the fastest scheme drifts. They are tried from the fastest (fewest fp32 blocks) on; the first within both bounds is
saved, else nothing. Late blocks run at low resolution, so keeping them fp32 costs little speed.
Every scheme's int8 convolutions get their biases corrected for the mean error their 7-bit weights add
(`bias_corrections`): rounding the weights shifts the mean of every channel a little, the same for every photo,
and those shifts add up through the network (56 % of the squared error of a demo student's pooled values); the
correction cut its SRCC lost against fp32's ranking from 0.0030 to 0.0007 on 300 photos (30 % fp32), at no cost
in speed. The message gives the saved model's speed against fp32 here (`speedup`), and says when it is not faster.
"""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import IAAError
from .scorer import Scorer, onnx_session

DEFAULT_MAX_SRCC_DROP = 0.01  # against the labels of a labelled split, when one is given
# 1 - SRCC(int8, fp32) on the held-out photos: at 0.001 a labelled split of 74 photos sees an SRCC drop within
# +-0.005 in 93 % of draws (simulated: fp32 scores of the demo's test split plus noise of that rank loss)
DEFAULT_MAX_RANK_LOSS = 0.001
CALIBRATION_IMAGES = 300
HELD_OUT_IMAGES = 300
HELD_OUT_SHARE = 1 / 3  # of the sampled photos, when there are too few for both
DEFAULT_FP32_EARLY = 0.3  # share of the convolutions, from the input on, kept in fp32
EXTRA_FP32_BLOCKS = 4  # the most sensitive later blocks added to fp32 one by one, one scheme each
MEAN_INPUT_PHOTOS = 2  # photos per run when every convolution's input is an output (bounds the memory)
SENSITIVITY_IMAGES = 64  # of the calibration photos, scored for each block tried in the search
POOLING_OPS = ("ReduceMean", "GlobalAveragePool", "Flatten", "Cast")  # the MLSP taps (the export writes GlobalAveragePool + Flatten)
SCHEME = "uint8 activations, 7-bit weights"


@dataclass(frozen=True)
class Drift:
    """How far the int8 model's scores move from the fp32 model's: its rank loss on `held_out` photos, and
    on `images` photos of `where` (a labelled split, or the held-out photos again)."""

    where: str
    images: int
    srcc_fp32: float | None  # against the labels (None without labels)
    srcc_int8: float | None
    srcc_drop: float  # srcc_fp32 - srcc_int8, or the rank loss without labels
    mean_abs_difference: float  # of the mean scores, on the model's scale
    rank_loss: float = 0.0  # 1 - SRCC(int8, fp32) on `held_out` photos
    held_out: int = 0
    ranked_on: str = "held-out photos"  # or "calibration photos", when too few were held out
    scheme: str = ""
    speedup: float | None = None  # fp32's CPU time per photo over int8's, here (`speedup`)

    def summary(self) -> str:
        scheme = f"{self.scheme}: " if self.scheme else ""
        ranking = f"SRCC lost against fp32's ranking {self.rank_loss:.4f} on {self.held_out} {self.ranked_on}"
        labels = (f"; on {self.images} photos of {self.where}: SRCC {self.srcc_fp32:.4f} fp32 -> {self.srcc_int8:.4f} "
                  f"int8 (drop {self.srcc_drop:+.4f})" if self.srcc_fp32 is not None else "")
        speed = "" if self.speedup is None else (
            f"; {self.speedup:.2f}x fp32's speed on this machine (1 thread, CPU time per photo)" if self.speedup > 1
            else f"; NOT faster than fp32 on this machine ({self.speedup:.2f}x, 1 thread, CPU time per photo): keep "
                 "the fp32 model here")
        return f"{scheme}{ranking}{labels}, mean |score difference| {self.mean_abs_difference:.4f}{speed}"


def calibration_photos(spec: str, count: int = CALIBRATION_IMAGES, held_out: int = HELD_OUT_IMAGES,
                       seed: int = 0) -> tuple[list[str], list[str]]:
    """A seeded sample of a folder's photos, or of a dataset's train split (`FORMAT:PATH`), split into up to
    `count` to calibrate on and up to `held_out` held out (see `split_held_out`)."""
    from ..data.registry import open_dataset
    from .paths import collect_inputs

    if Path(spec).expanduser().is_dir():
        paths = collect_inputs([str(Path(spec).expanduser())]).paths
    else:
        records = open_dataset(spec).records
        paths = [str(r.path) for r in [r for r in records if r.split == "train"] or records]
    if not paths:
        raise IAAError(f"{spec}: no photos to calibrate on")
    chosen = np.random.default_rng(seed).permutation(len(paths))
    return split_held_out([paths[i] for i in chosen], count, held_out)


def split_held_out(photos: Sequence[str], count: int = CALIBRATION_IMAGES,
                   held_out: int = HELD_OUT_IMAGES) -> tuple[list[str], list[str]]:
    """(calibration, held out): up to `held_out` photos held out, never more than `HELD_OUT_SHARE` of them
    (none when that is under 3), and up to `count` of the others to calibrate on."""
    kept = min(held_out, int(len(photos) * HELD_OUT_SHARE))
    kept = kept if kept >= 3 else 0
    return sorted(photos[kept:kept + count]), sorted(photos[:kept])


def labelled_split(spec: str, split: str) -> tuple[list[str], np.ndarray]:
    """The paths and label means of one split of a labelled dataset."""
    from ..data.registry import open_dataset

    records = [r for r in open_dataset(spec).split(split) if r.label is not None]
    if len(records) < 3:
        raise IAAError(f"{spec}: its {split} split has {len(records)} labelled photos; drift needs at least 3")
    return [str(r.path) for r in records], np.array([r.label.mean for r in records])


class _Inputs(Sequence[np.ndarray]):
    """The model's input batches of some photos, held as their uint8 pixels (a quarter of the floats' memory: a
    teacher folder's photo is 2.1 MB in float) and made the model's float input each time a batch is read."""

    def __init__(self, model_input: Callable[[list], torch.Tensor], images: list[list[torch.Tensor]]):
        self.model_input, self.images = model_input, images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, k: int) -> np.ndarray:
        return self.model_input(self.images[k]).numpy()


@dataclass
class _Photos:
    """Model inputs of some photos (decoded once), the rows of the photos that decoded, their fp32 scores."""

    batches: Sequence[np.ndarray]
    rows: list[int]
    fp32: np.ndarray


def quantize_onnx(model_dir: str | Path, out: str | Path, calibration: Sequence[str], held_out: Sequence[str] = (), *,
                  check: tuple[list[str], np.ndarray, str] | None = None, max_srcc_drop: float = DEFAULT_MAX_SRCC_DROP,
                  max_rank_loss: float = DEFAULT_MAX_RANK_LOSS, fp32_early: float = DEFAULT_FP32_EARLY,
                  extra_blocks: int = EXTRA_FP32_BLOCKS, batch_size: int = 16, workers: int = 2) -> Drift:
    """Write the int8 model of `model_dir` to `out` (temp file + rename) in the fastest scheme within
    `max_rank_loss` on the `held_out` photos (the calibration photos when fewer than 3 are held out) and, with
    `check` (paths, label means, description of a labelled split), within `max_srcc_drop` on it; return its
    drift. IAAError, and nothing written, when every scheme drifts past them."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .onnx_cache import cached_onnx

    fp32 = cached_onnx(model_dir)
    if fp32 is None:
        raise IAAError(f"{model_dir}: its fp32 ONNX export could not be made (see the message above)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scorer = Scorer.from_pretrained(model_dir, device="cpu", backend="onnx", onnx_path=fp32)
    session = scorer.backend.session
    inputs = lambda paths: _photos(scorer, session, paths, batch_size, workers)
    calibrating = inputs(calibration)
    held = inputs(held_out) if len(held_out) >= 3 else calibrating
    labelled = (inputs(check[0]), np.asarray(check[1]), check[2]) if check is not None else None
    refused = []
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize = _Quantizer(prepared, session.get_inputs()[0].name, calibrating.batches, Path(tmp))
        graph = list(onnx.load(str(prepared)).graph.node)
        base, early, ranked, kept = fp32_nodes(graph, fp32_early), _early_share(graph, fp32_early), [], 0
        while kept <= len(ranked):
            int8 = quantize(base + [n for _, nodes in ranked[:kept] for n in nodes], f"int8-{kept}.onnx")
            blocks = ", ".join(name for name, _ in ranked[:kept])
            scheme = f"{SCHEME}, fp32 {early}" + (f" and {blocks}" if blocks else "")
            drift = measure_drift(int8, held, labelled, scheme, len(held_out) >= 3)
            if drift.rank_loss <= max_rank_loss and (labelled is None or drift.srcc_drop <= max_srcc_drop):
                drift = replace(drift, speedup=speedup(fp32, int8, held.batches))
                os.replace(int8, out)
                return drift
            refused.append(drift.summary())
            if kept == 0 and extra_blocks:  # the sensitivity pass only when the fastest scheme drifts
                ranked = sensitive_blocks(quantize, base, calibrating, extra_blocks)
            kept += 1
    bounds = f"an SRCC loss against fp32's ranking of {max_rank_loss} (--max-rank-loss)"
    if labelled is not None:
        bounds += f" and an SRCC drop of {max_srcc_drop} (--max-srcc-drop)"
    raise IAAError(f"int8 model refused: {'; '.join(refused)}; the bounds are {bounds}; try more or other "
                   "calibration photos, or keep the fp32 model")


def _photos(scorer: Scorer, session, paths: Sequence[str], batch_size: int, workers: int) -> _Photos:
    """The model inputs of `paths`, decoded once for every scheme tried, and their fp32 scores."""
    images, rows = [], []
    for _, batch in scorer.iter_inputs(paths, batch_size, workers):
        if batch.rows:
            images.append([image.clone() for image in batch.images])  # its own memory, not the workers' buffer
            rows += batch.rows  # those that decoded
    batches = _Inputs(scorer.model_input, images)
    return _Photos(batches, rows, _scores(session, batches))


def _first(batches: Sequence[np.ndarray], photos: int) -> list[np.ndarray]:
    """The batches that hold the first `photos` photos (whole batches)."""
    kept, count = [], 0
    for batch in batches:
        if count >= photos:
            break
        kept.append(batch)
        count += len(batch)
    return kept


def _scores(session, batches: Sequence[np.ndarray]) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(["mean"], {name: b})[0] for b in batches]) if batches else np.zeros(0)


class _Quantizer:
    """onnxruntime's static QDQ quantisation of `prepared` in `SCHEME`, calibrated (MinMax, in bounded memory:
    `calibration.calibrate`) once, on the first call, and the ranges reused from onnxruntime's calibration cache by
    every later call. Each int8 convolution's bias is corrected for the mean error its 7-bit weights add
    (`bias_corrections`, measured on the first call's model: later calls keep at least its fp32 nodes fp32); the
    convolutions a call keeps fp32 keep their own bias."""

    def __init__(self, prepared: Path, input_name: str, batches: Sequence[np.ndarray], tmp: Path):
        self.prepared, self.input_name, self.batches, self.tmp = prepared, input_name, batches, tmp
        self.corrections: dict[str, tuple[str, np.ndarray]] | None = None

    def __call__(self, exclude: list[str], name: str) -> Path:
        out = self.tmp / name
        if self.corrections is None:
            self._quantize(self.prepared, exclude, out)
            self.corrections = bias_corrections(self.prepared, out, self.batches, self.input_name, self.tmp)
        self._quantize(self._corrected(set(exclude)), exclude, out)
        return out

    def _quantize(self, model: Path, exclude: list[str], out: Path) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        from .calibration import calibrate

        cache = self.tmp / "calibration.json"
        if not cache.is_file():  # the ranges of `prepared`, which every later call reads from the cache
            calibrate(self.prepared, self.input_name, self.batches, cache)
        quantize_static(str(model), str(out), None, quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
                        calibration_cache_path=cache)

    def _corrected(self, exclude: set[str]) -> Path:
        """`prepared` with the corrected biases of the convolutions not in `exclude`."""
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(self.prepared))
        initializers = {i.name: i for i in model.graph.initializer}
        for node in model.graph.node:
            if node.name in self.corrections and node.name not in exclude:
                bias, value = self.corrections[node.name]
                if bias not in initializers:  # a convolution without a bias gets one
                    initializers[bias] = model.graph.initializer.add()
                    node.input.append(bias)
                initializers[bias].CopyFrom(numpy_helper.from_array(value, bias))
        path = self.tmp / "corrected.onnx"
        onnx.save(model, str(path))
        return path


def bias_corrections(prepared: Path, quantized: Path, batches: Sequence[np.ndarray], input_name: str,
                     tmp: Path) -> dict[str, tuple[str, np.ndarray]]:
    """Bias correction (Nagel et al. 2019, empirical): per 2-D convolution that is int8 in `quantized`, (its bias's
    name, that bias minus the mean error of its output over `batches` that its int8 weights add, i.e. the
    difference of its dequantised and fp32 weights convolved with the mean of its fp32 input). 7-bit weights
    shift the mean of every channel a little, and the shifts add up through the network; on a demo student
    this cut the SRCC lost against fp32's ranking 3-4 times."""
    import onnx
    from onnx import numpy_helper

    model, int8 = onnx.load(str(prepared)), onnx.load(str(quantized))
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantized_weights = {i.name: numpy_helper.to_array(i) for i in int8.graph.initializer}
    dequantize = {n.output[0]: n for n in int8.graph.node if n.op_type == "DequantizeLinear"}
    int8_convs = {n.name: n for n in int8.graph.node if n.op_type == "Conv" and n.input[1] in dequantize}
    convs = [n for n in model.graph.node if n.name in int8_convs and n.input[1] in weights
             and weights[n.input[1]].ndim == 4 and _attributes(n).get("auto_pad", b"NOTSET") == b"NOTSET"
             and (len(n.input) < 3 or n.input[2] in weights)]  # a bias, if any, that is a constant
    means = _mean_inputs(prepared, [n.input[0] for n in convs], batches, input_name, tmp)
    corrections = {}
    for node in convs:
        error = _dequantized(dequantize[int8_convs[node.name].input[1]], quantized_weights) - weights[node.input[1]]
        attributes = _attributes(node)
        top, left, bottom, right = attributes.get("pads", [0, 0, 0, 0])
        mean_input = torch.nn.functional.pad(torch.from_numpy(means[node.input[0]])[None], (left, right, top, bottom))
        shift = torch.nn.functional.conv2d(mean_input, torch.from_numpy(error), stride=attributes.get("strides", 1),
                                           dilation=attributes.get("dilations", 1), groups=attributes.get("group", 1))
        bias = node.input[2] if len(node.input) > 2 else f"{node.name}/corrected_bias"
        value = weights.get(bias, np.zeros(error.shape[0], np.float32)) - shift.mean(dim=(0, 2, 3)).numpy()
        corrections[node.name] = (bias, value.astype(np.float32))
    return corrections


def _attributes(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _dequantized(node, initializers: dict[str, np.ndarray]) -> np.ndarray:
    """The float weights a DequantizeLinear of an initializer gives: (q - zero point) * scale, per channel on its axis."""
    values = initializers[node.input[0]].astype(np.float32)
    shape = [1] * values.ndim
    scale = initializers[node.input[1]]
    if scale.ndim:  # per channel
        shape[_attributes(node).get("axis", 1)] = -1
    zero = initializers[node.input[2]].astype(np.float32) if len(node.input) > 2 and node.input[2] else np.zeros(1)
    return (values - zero.reshape(shape if zero.ndim else [])) * scale.reshape(shape if scale.ndim else [])


def _mean_inputs(model: Path, tensors: list[str], batches: Sequence[np.ndarray], input_name: str,
                 tmp: Path) -> dict[str, np.ndarray]:
    """The mean over `batches` of each of `tensors` of `model` (an fp32 ONNX model), per position and channel."""
    import onnx

    graph = onnx.load(str(model))
    tensors = sorted(set(tensors))
    listed = {o.name for o in graph.graph.output}
    graph.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                              for t in tensors if t not in listed)
    path = tmp / "mean-inputs.onnx"
    onnx.save(graph, str(path))
    session, sums, count = onnx_session(path), {}, 0
    for chunk in (b[k:k + MEAN_INPUT_PHOTOS] for b in batches for k in range(0, len(b), MEAN_INPUT_PHOTOS)):
        for name, value in zip(tensors, session.run(tensors, {input_name: chunk})):
            sums[name] = sums.get(name, 0.0) + value.sum(axis=0, dtype=np.float64)
        count += len(chunk)
    return {name: (total / max(count, 1)).astype(np.float32) for name, total in sums.items()}


def fp32_nodes(nodes: list, early: float) -> list[str]:
    """The names of the nodes of a graph (its nodes in order) kept in fp32: up to the first `early` share of each
    backbone's convolutions from its input (a student has one backbone, a teacher folder several: `stems`), the
    pooling taps and the head."""
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    if not convs:
        return []
    above = stems(nodes)
    first_int8 = {stem: _first_int8([i for i in convs if above[i] == {stem}], early) for stem in set().union(*above)}
    on_input = max(first_int8.values())  # a node on the input alone is fp32 as far as any backbone's share
    return [n.name for i, n in enumerate(nodes) if n.op_type in POOLING_OPS or i > convs[-1]
            or i < (on_input if not above[i] else first_int8[min(above[i])] if len(above[i]) == 1 else 0)]


def _early_share(nodes: list, early: float) -> str:
    """The words for the `early` share kept fp32: "of each backbone's" where the graph (its nodes) holds several."""
    several = len(set().union(*stems(nodes))) > 1
    convolutions = "each backbone's convolutions from its input" if several else "the convolutions from the input"
    return f"{early:.0%} of {convolutions}"


def stems(nodes: list) -> list[frozenset[int]]:
    """The backbones each node of a graph depends on, by graph structure: the indices of the stems (the
    convolutions with no convolution before them) above it. One for a node of a backbone, none before every
    convolution, several after the backbones meet (a teacher folder's head)."""
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    above: list[frozenset[int]] = []
    for n in nodes:  # ONNX graphs are in topological order
        inputs = frozenset().union(*(above[producer[x]] for x in n.input if x in producer))
        above.append(frozenset({len(above)}) if n.op_type == "Conv" and not inputs else inputs)
    return above


def _first_int8(convs: list[int], early: float) -> int:
    return convs[min(len(convs) - 1, int(np.ceil(early * len(convs))))] if early > 0 else 0


def blocks(model: Path) -> list[tuple[str, list[str]]]:
    """The model's blocks in graph order: (name, its nodes), a block being the consecutive convolutions of one
    indexed module (timm's `blocks.4.0`, its squeeze-excite included) and the nodes from its first convolution
    to the next block's."""
    import onnx

    nodes = list(onnx.load(str(model)).graph.node)
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    module = {i: _block_module(nodes[i].name) for i in convs}
    starts = [i for k, i in enumerate(convs) if k == 0 or module[i] != module[convs[k - 1]]]
    ends = [*starts[1:], convs[-1] + 1] if convs else []
    return [(module[a].rsplit("/", 1)[-1] or module[a], [n.name for n in nodes[a:b]]) for a, b in zip(starts, ends)]


def _block_module(conv: str) -> str:
    """"/model/backbone/blocks/blocks.4/blocks.4.0/se/conv_reduce/Conv" -> "/model/backbone/blocks/blocks.4/blocks.4.0"
    (the innermost module with an index), else the module holding the convolution ("/model/backbone")."""
    parts = conv.split("/")[:-1]
    indexed = [k for k, part in enumerate(parts) if re.search(r"\.\d+$", part)]
    return "/".join(parts[:indexed[-1] + 1] if indexed else parts[:-1])


def sensitive_blocks(quantize: _Quantizer, base: list[str], photos: _Photos, count: int) -> list[tuple[str, list[str]]]:
    """Up to `count` int8 blocks to keep fp32, the most sensitive first, by greedy forward selection: each step
    adds the block whose fp32 (beside `base` and the blocks chosen) leaves the least noise in the scores against
    fp32's (the spread of their difference) on `photos` (the first `SENSITIVITY_IMAGES` of them)."""
    fp32, chosen = set(base), []
    batches = _first(photos.batches, SENSITIVITY_IMAGES)
    reference = sum(len(b) for b in batches)
    candidates = [(name, nodes) for name, nodes in blocks(quantize.prepared) if not set(nodes) <= fp32]
    while candidates and len(chosen) < count:
        noise = []
        for name, nodes in candidates:
            path = quantize(base + [n for _, kept in chosen for n in kept] + nodes, "sensitivity.onnx")
            noise.append(float(np.std(_scores(onnx_session(path), batches) - photos.fp32[:reference])))
        chosen.append(candidates.pop(int(np.argmin(noise))))
    return chosen


def speedup(fp32: Path, int8: Path, batches: Sequence[np.ndarray], photos: int = 64, rounds: int = 3) -> float:
    """fp32's CPU time per photo over int8's on the first `photos` of `batches`, one intra-op thread each,
    medians of `rounds` interleaved rounds (CPU time, so that other jobs on a shared machine count less)."""
    import time

    sessions, kept = [onnx_session(p, threads=1) for p in (fp32, int8)], _first(batches, photos)
    times = np.zeros((rounds, 2))
    for session in sessions:
        _scores(session, kept[:1])  # warm-up
    for r in range(rounds):
        for k, session in enumerate(sessions):
            start = time.process_time()
            _scores(session, kept)
            times[r, k] = time.process_time() - start
    fp32_time, int8_time = np.median(times, axis=0)
    return float(fp32_time / max(int8_time, 1e-9))


def measure_drift(int8: Path, held: _Photos, labelled: tuple[_Photos, np.ndarray, str] | None, scheme: str,
                  held_out: bool) -> Drift:
    """The int8 model's rank loss against fp32 on `held` and, with `labelled`, its SRCC drop against the labels."""
    from ..evaluation.metrics import srcc

    session = onnx_session(int8)
    if len(held.rows) < 3:
        raise IAAError("fewer than 3 photos could be decoded to measure the int8 drift")
    scores = _scores(session, held.batches)
    rank_loss = 1.0 - srcc(held.fp32, scores)
    where = "the held-out photos" if held_out else "the calibration photos"
    common = {"rank_loss": rank_loss, "held_out": len(held.rows), "scheme": scheme,
              "ranked_on": "held-out photos" if held_out else "calibration photos"}
    if labelled is None:
        return Drift(where, len(held.rows), None, None, rank_loss, float(np.abs(scores - held.fp32).mean()), **common)
    photos, labels, description = labelled
    scores = _scores(session, photos.batches)
    truth = labels[photos.rows]
    before, after = srcc(truth, photos.fp32), srcc(truth, scores)
    return Drift(description, len(photos.rows), before, after, before - after,
                 float(np.abs(scores - photos.fp32).mean()), **common)
