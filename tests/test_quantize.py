"""`iaa export onnx --int8`: a statically quantised model that scores, refused (nothing written) past its bound."""
from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

import iaa_distill.scoring.quantize as quantize
from iaa_distill.cli import main
from iaa_distill.scoring import Scorer
from tests.conftest import save_tiny_student, write_jpegs

pytestmark = pytest.mark.usefixtures("single_thread")


def srcc(a, b):
    from iaa_distill.evaluation.metrics import srcc

    return srcc(np.asarray(a), np.asarray(b))


def fp32_means(model_dir, photos):
    from iaa_distill.scoring.onnx_cache import cached_onnx

    scorer = Scorer.from_pretrained(model_dir, device="cpu", backend="onnx", onnx_path=cached_onnx(model_dir))
    return [r.mean for r in scorer.score_paths(photos, batch_size=16, num_workers=0)]


def _drifting(real, drifts: int):
    """measure_drift whose first `drifts` schemes lose 0.2 of fp32's ranking."""
    calls = []

    def measure(*args, **kwargs):
        calls.append(1)
        measured = real(*args, **kwargs)
        return quantize.Drift(**{**measured.__dict__, "rank_loss": 0.2}) if len(calls) <= drifts else measured

    return measure, calls


def test_int8_model_scores_and_is_refused_past_its_bound(tmp_path, sample_photos, monkeypatch, capsys):
    write_jpegs(tmp_path / "photos", sample_photos, 8, size=160)
    model_dir = save_tiny_student(tmp_path / "student")
    out = tmp_path / "int8.onnx"
    args = ["export", "onnx", "--model", str(model_dir), "--int8", "--calibration", str(tmp_path / "photos")]
    assert main([*args, "--out", str(out), "--max-rank-loss", "1"]) == 0
    printed = capsys.readouterr().out  # 2 held out would be too few: all 8 calibrate, and rank on themselves
    assert "calibrated on 8 photos" in printed and "on 8 calibration photos" in printed
    assert "fp32's speed on this machine" in printed or "NOT faster than fp32 on this machine" in printed
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(out)).graph.node)
    results = Scorer.from_pretrained(model_dir, backend="onnx", onnx_path=out).score(sorted((tmp_path / "photos").iterdir()))
    assert all(r.ok for r in results)

    monkeypatch.setattr(quantize, "measure_drift", _drifting(quantize.measure_drift, 99)[0])
    assert main([*args, "--out", str(tmp_path / "refused.onnx")]) == 1
    assert "int8 model refused" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx", "photos", "student"]  # nothing partial left


def test_the_fastest_scheme_within_the_bound_is_saved_else_one_with_a_sensitive_block_kept_fp32(tmp_path, sample_photos,
                                                                                                monkeypatch):
    write_jpegs(tmp_path / "photos", sample_photos, 9, size=160)
    model_dir = save_tiny_student(tmp_path / "student")
    photos = [str(p) for p in sorted((tmp_path / "photos").iterdir())]
    calibration, held_out = photos[:6], photos[6:]
    (tmp_path / "broken.jpg").write_bytes(b"not a photo")
    labelled = ([str(tmp_path / "broken.jpg"), *photos[:5]], np.array([9.0, 1.0, 2.0, 3.0, 4.0, 5.0]), "a split")
    fast = quantize.quantize_onnx(model_dir, tmp_path / "fast.onnx", calibration, held_out, check=labelled,
                                  max_rank_loss=1.0, max_srcc_drop=1.0)
    assert fast.held_out == 3 and fast.scheme.endswith("from the input")  # on the held-out photos, no block added
    assert fast.images == 5 and fast.srcc_fp32 == pytest.approx(srcc(np.arange(1.0, 6.0), fp32_means(model_dir, photos[:5])))

    measure, calls = _drifting(quantize.measure_drift, 1)
    monkeypatch.setattr(quantize, "measure_drift", measure)
    slower = quantize.quantize_onnx(model_dir, tmp_path / "slower.onnx", calibration, held_out, max_rank_loss=0.1)
    assert len(calls) == 2 and " and blocks." in slower.scheme
    quantized = [sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(tmp_path / f)).graph.node)
                 for f in ("fast.onnx", "slower.onnx")]
    assert quantized[1] < quantized[0]  # the block kept fp32 has no int8 inputs any more


def test_every_calibration_batch_sets_the_ranges_whatever_the_batch_size(tmp_path, sample_photos):
    write_jpegs(tmp_path / "photos", sample_photos, 8, size=160)
    model_dir = save_tiny_student(tmp_path / "student")
    photos = [str(p) for p in sorted((tmp_path / "photos").iterdir())]
    saved = {}
    for batch in (1, 8):  # 8 batches of one photo, or one of 8: the same min and max of every tensor
        out = tmp_path / f"int8-{batch}.onnx"
        quantize.quantize_onnx(model_dir, out, photos, max_rank_loss=1.0, extra_blocks=0, batch_size=batch)
        saved[batch] = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer
                        if i.name.endswith("_scale")}
    assert saved[1].keys() == saved[8].keys() and saved[1]
    assert all(np.allclose(saved[1][k], saved[8][k], rtol=1e-5) for k in saved[1])


def test_an_int8_model_that_is_not_faster_than_fp32_says_so():
    drift = quantize.Drift("held-out photos", 9, None, None, 0.0, 0.01, speedup=0.93)
    assert "NOT faster than fp32 on this machine (0.93x" in drift.summary()
    assert "1.25x fp32's speed on this machine" in quantize.Drift("x", 9, None, None, 0.0, 0.01, speedup=1.25).summary()


def test_blocks_cover_every_convolution_once_named_by_their_indexed_module(tmp_path):
    from iaa_distill.scoring.onnx_export import export_onnx

    model_dir = save_tiny_student(tmp_path / "student")
    path = export_onnx(model_dir, tmp_path / "model.onnx")
    convs = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
    found = quantize.blocks(path)
    assert sorted(n for _, nodes in found for n in nodes if n in convs) == sorted(convs)
    names = [name for name, _ in found]
    assert "blocks.3.0" in names and len(names) == len(set(names))  # a block's squeeze-excite convs are its own


def test_each_backbone_of_a_graph_keeps_its_own_early_share_in_fp32():
    """A teacher folder is several backbones in one graph: each keeps the first 30 % of its own convolutions fp32,
    whatever order the graph lists them in (here backbone b before a); a one-backbone graph keeps its first 30 %."""
    from onnx import TensorProto, helper, numpy_helper

    def graph(backbones: str) -> onnx.ModelProto:
        nodes, weights, taps = [], [], []
        for b in backbones:
            x = "image"
            for k in range(4):
                weights.append(numpy_helper.from_array(np.full((3, 3, 1, 1), 0.1, np.float32), f"w{b}{k}"))
                nodes += [helper.make_node("Conv", [x, f"w{b}{k}"], [f"c{b}{k}"], name=f"conv_{b}{k}"),
                          helper.make_node("Relu", [f"c{b}{k}"], [f"r{b}{k}"], name=f"relu_{b}{k}")]
                x = f"r{b}{k}"
            nodes.append(helper.make_node("GlobalAveragePool", [x], [f"p{b}"], name=f"pool_{b}"))
            taps.append(f"p{b}")
        nodes.append(helper.make_node("Sum", taps, ["score"], name="head"))
        io = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, 8, 8])
        return helper.make_model(helper.make_graph(nodes, "g", [io("image")], [helper.make_tensor_value_info(
            "score", TensorProto.FLOAT, [1, 3, 1, 1])], weights))

    two = list(graph("ba").graph.node)
    kept = set(quantize.fp32_nodes(two, 0.3))
    assert {"conv_a0", "relu_a0", "conv_a1", "relu_a1", "conv_b0", "relu_b0", "conv_b1", "relu_b1"} <= kept
    assert not {"conv_a2", "conv_a3", "conv_b2", "conv_b3"} & kept
    assert {"pool_a", "pool_b", "head"} <= kept
    assert "each backbone's" in quantize._early_share(two, 0.3)
    one = list(graph("a").graph.node)
    assert {n for n in quantize.fp32_nodes(one, 0.3) if n.startswith("conv")} == {"conv_a0", "conv_a1"}
    assert quantize._early_share(one, 0.3) == "30% of the convolutions from the input"


def test_held_out_photos_are_never_calibrated_on_and_at_most_a_third():
    photos = [f"{i}.jpg" for i in range(12)]
    calibration, held_out = quantize.split_held_out(photos, count=300, held_out=300)
    assert len(held_out) == 4 and len(calibration) == 8 and not set(calibration) & set(held_out)
    assert quantize.split_held_out(photos[:8]) == (sorted(photos[:8]), [])  # 2 would be too few to rank
    calibration, held_out = quantize.split_held_out([f"{i}.jpg" for i in range(1000)], count=300, held_out=200)
    assert (len(calibration), len(held_out)) == (300, 200) and not set(calibration) & set(held_out)


def test_bias_correction_removes_the_mean_error_that_7_bit_weights_add(tmp_path):
    import torch

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    with torch.no_grad():
        conv.weight.normal_(0, 0.3)[:, 0, 0, 0] = 3.0  # one large weight per channel: coarse 7-bit steps for the rest
    path = tmp_path / "conv.onnx"
    torch.onnx.export(torch.nn.Sequential(conv, torch.nn.ReLU6()).eval(), (torch.rand(1, 4, 16, 16),), str(path),
                      dynamo=False, input_names=["images"], output_names=["out"], dynamic_axes={"images": {0: "n"}})
    batches = [np.random.default_rng(k).random((4, 4, 16, 16), dtype=np.float32) for k in range(3)]

    def mean_error(model):  # of each output channel over the photos, against fp32
        scores = [np.concatenate([quantize.onnx_session(m).run(["out"], {"images": b})[0] for b in batches])
                  for m in (path, model)]
        return np.abs((scores[1] - scores[0]).mean(axis=(0, 2, 3))).max()

    quantizer = quantize._Quantizer(path, "images", batches, tmp_path)
    quantizer._quantize(path, [], tmp_path / "plain.onnx")  # what the export wrote before
    corrected = quantizer([], "corrected.onnx")
    assert quantizer.corrections and mean_error(corrected) < 0.2 * mean_error(tmp_path / "plain.onnx")
    graph = onnx.load(str(path)).graph
    quantizer([n.name for n in graph.node], "fp32.onnx")  # a convolution kept fp32 keeps its own bias
    bias = next(n.input[2] for n in graph.node if n.op_type == "Conv")
    kept = {i.name: i for i in onnx.load(str(tmp_path / "corrected.onnx")).graph.initializer}[bias]
    assert np.array_equal(onnx.numpy_helper.to_array(kept), conv.bias.detach().numpy())


def _conv_chain(path, convs: int, channels: int = 8) -> None:
    """An ONNX chain of `convs` 1x1 convolutions with ReLUs, input `images` (N x channels x H x W)."""
    from onnx import TensorProto, helper, numpy_helper

    rng, nodes, weights, x = np.random.default_rng(0), [], [], "images"
    for k in range(convs):
        weight = rng.normal(0, 0.4, (channels, channels, 1, 1)).astype(np.float32)
        weights.append(numpy_helper.from_array(weight, f"w{k}"))
        nodes += [helper.make_node("Conv", [x, f"w{k}"], [f"c{k}"], name=f"conv{k}"),
                  helper.make_node("Relu", [f"c{k}"], [f"r{k}"], name=f"relu{k}")]
        x = f"r{k}"
    io = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", channels, "h", "w"])
    model = helper.make_model(helper.make_graph(nodes, "chain", [io("images")], [io(x)], weights),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))


def test_calibration_gives_onnxruntimes_own_ranges(tmp_path):
    from onnxruntime.quantization import CalibrationMethod, QuantType, load_tensors_data, quantize_static

    from iaa_distill.scoring import calibration

    _conv_chain(tmp_path / "chain.onnx", 4)
    batches = [np.random.default_rng(k).normal(size=(3, 8, 16, 16)).astype(np.float32) for k in range(5)]
    quantize_static(str(tmp_path / "chain.onnx"), str(tmp_path / "int8.onnx"), calibration._Batches("images", batches),
                    activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.MinMax,
                    calibration_cache_path=tmp_path / "onnxruntime.json")  # onnxruntime calibrating on its own
    calibration.calibrate(tmp_path / "chain.onnx", "images", batches, tmp_path / "ours.json")
    theirs, ours = (load_tensors_data(tmp_path / name) for name in ("onnxruntime.json", "ours.json"))
    assert set(ours.keys()) == set(theirs.keys()) and len(ours.keys()) == 9
    assert all(np.array_equal(ours[k].range_value, theirs[k].range_value) for k in ours.keys())


def test_calibration_does_not_hold_every_tensor_of_a_batch(tmp_path):
    """onnxruntime's own calibrator kept every tensor of a run alive to its end (a teacher folder's export
    peaked at 10 GB): the memory calibration adds stays well under the size of all the tensors of a batch."""
    import subprocess
    import sys

    convs, shape = 30, (16, 8, 96, 96)
    every_tensor = 2 * convs * np.prod(shape) * 4 / 1e6  # MB: every convolution's and ReLU's output
    _conv_chain(tmp_path / "chain.onnx", convs)
    script = f"""
import resource, numpy as np, onnxruntime
import onnxruntime.quantization, iaa_distill.scoring.quantize as quantize
from pathlib import Path
tmp = Path({str(tmp_path)!r})
batches = [np.random.default_rng(k).random({shape}, dtype=np.float32) for k in range(2)]
quantize.onnx_session(tmp / "chain.onnx").run(None, {{"images": batches[0]}})  # a plain run: the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
quantize._Quantizer(tmp / "chain.onnx", "images", batches, tmp)._quantize(tmp / "chain.onnx", [], tmp / "int8.onnx")
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1e3)
"""
    added = float(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    assert added < 0.25 * every_tensor, f"calibration added {added:.0f} MB; a batch's tensors are {every_tensor:.0f} MB"


def test_photos_are_held_as_uint8_and_read_as_the_models_float_input(tmp_path, sample_photos):
    import torch

    from iaa_distill.scoring.onnx_cache import cached_onnx

    write_jpegs(tmp_path / "photos", sample_photos, 5, size=160)
    model_dir = save_tiny_student(tmp_path / "student")
    photos = [str(p) for p in sorted((tmp_path / "photos").iterdir())]
    scorer = Scorer.from_pretrained(model_dir, device="cpu")
    held = quantize._photos(scorer, quantize.onnx_session(cached_onnx(model_dir)), photos, 2, 0).batches
    expected = [scorer.model_input(batch.images).numpy() for _, batch in scorer.iter_inputs(photos, 2, 0)]
    assert all(image.dtype == torch.uint8 for batch in held.images for image in batch)
    assert len(held) == 3 and all(np.array_equal(a, b) for a, b in zip(held, expected, strict=True))
