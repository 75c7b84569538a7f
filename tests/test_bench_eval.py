"""`bench eval` on a tiny config: every row and mode measured, GFLOPs in order, the JSON and the
command. No timing assertions (the machine is shared); compiled modes are left out (minutes)."""

import json

import click
import pytest
from click.testing import CliRunner

from s2d_fast.bench.eval import bench_eval, bench_eval_command, check_args, parse_mode
from s2d_fast.config import load_config

TINY = [
    "DATA.NUM_CANDIDATES", "8", "DATA.CROP_SIZE", "32",
    "SNET.ARCH", "resnet18", "SNET.NUM_FRAMES", "4", "SNET.INPUT_SIZE", "32",
    "DNET.ARCH", "resnet18", "DNET.NUM_FRAMES", "4", "DNET.INPUT_SIZE", "32",
    "S2D.TOPK", "3", "S2D.THETA_CHANNELS", "16", "S2D.EMBED_DIM", "8", "S2D.CONTEXT_DIM", "16",
]
MODES = ("eager-fp32", "eager-bf16")
MODELS = ("s2dnet", "tsm4", "tsm8", "tv4")


def test_bench_eval_tiny(tmp_path, capsys):
    cfg = load_config(None, TINY)
    path = tmp_path / "eval.json"
    result = bench_eval(cfg, batch_size=2, batches=1, repeats=1, modes=MODES, models=MODELS,
                        json_path=str(path), device="cpu", inputs="random", roofline_size=128)

    assert [row["model"] for row in result["rows"]] == list(MODELS)
    for row in result["rows"]:
        assert row["gflops"] > 0
        assert set(row["videos_per_s"]) == set(MODES)
        assert all(v > 0 for v in row["videos_per_s"].values())
        assert all(len(runs) == 1 for runs in row["runs"].values())
    gflops = {row["model"]: row["gflops"] for row in result["rows"]}
    # TSM pools before its classifier: 2K frames cost twice K's, up to the (tiny) classifier.
    assert gflops["tsm8"] == pytest.approx(2 * gflops["tsm4"], rel=0.01)
    # S2DNet = a 4-frame detail network plus SNet, f_theta and the sampling.
    assert gflops["tsm4"] < gflops["s2dnet"]
    # The anchor is torchvision's ResNet-18 on TSM's 4 frames: the same multiply-adds.
    assert gflops["tv4"] == pytest.approx(gflops["tsm4"], rel=1e-3)
    for row in result["rows"]:
        for mode in MODES:
            assert row["gmacs"][mode] == pytest.approx(row["gflops"] * row["videos_per_s"][mode])
    assert result["anchor"] == "tv4" and set(result["roofline_gmacs"]) == {"fp32", "bf16"}
    assert all(v > 0 for v in result["roofline_gmacs"].values())

    assert [r["against"] for r in result["ratios"]] == ["tsm4", "tsm8"]  # not the anchor
    for ratio in result["ratios"]:
        against = gflops[ratio["against"]]
        assert ratio["gflops_ratio"] == pytest.approx(against / gflops["s2dnet"])
        for mode in MODES:
            assert ratio["videos_per_s_ratio"][mode] > 0
            assert ratio["measured_over_gflops"][mode] == pytest.approx(
                ratio["videos_per_s_ratio"][mode] / ratio["gflops_ratio"])
    assert result["inputs"] == "random uint8 frames"
    assert result["device"].startswith("cpu")

    out = capsys.readouterr().out
    for name in ("S2DNet (resnet18 4x32 + resnet18 4x32)", "TSM-resnet18 4x32", "TSM-resnet18 8x32",
                 "torchvision resnet18 4x32 (anchor)", "GFLOPs/video", *MODES, "videos/s ratio (S2DNet / TSM)",
                 "GMAC/s (fvcore multiply-adds x videos/s)", "128^2 matmul (the roofline)", "GMAC/s over the anchor"):
        assert name in out
    written = json.loads(path.read_text())
    assert [row["model"] for row in written["rows"]] == list(MODELS)
    assert written["rows"][0]["videos_per_s"] == result["rows"][0]["videos_per_s"]


def test_bench_eval_reads_the_dataset(tiny_dataset):
    """With the built-in dataset on disk, auto decodes its validation videos (repeating them)."""
    cfg = load_config(None, TINY + ["DATA.ROOT", str(tiny_dataset), "DATA.SCALE_SIZE", "32"])
    result = bench_eval(cfg, batch_size=2, batches=7, repeats=1, modes=("eager-fp32",), models=("tsm4",),
                        device="cpu", inputs="auto", roofline_size=128)
    assert result["inputs"].startswith("14 validation videos of synthetic")
    assert "repeat" in result["inputs"]  # 12 validation videos for 14 places
    assert result["rows"][0]["videos_per_s"]["eager-fp32"] > 0


def test_auto_inputs_do_not_generate_the_dataset(tmp_path):
    cfg = load_config(None, TINY + ["DATA.CACHE_DIR", str(tmp_path / "cache")])
    result = bench_eval(cfg, batch_size=1, batches=1, repeats=1, modes=("eager-fp32",), models=("tsm4",),
                        device="cpu", inputs="auto", roofline_size=128)
    assert result["inputs"] == "random uint8 frames"
    assert not (tmp_path / "cache").exists()


def test_modes_and_models_are_checked():
    cfg = load_config(None, TINY)
    assert parse_mode("compiled-bf16-cl") == {"compiled": True, "amp": "bf16", "channels_last": True}
    assert parse_mode("eager-fp32") == {"compiled": False, "amp": "none", "channels_last": False}
    for bad in ({"modes": "eager-int8"}, {"models": "s2dnet,tsm"}, {"models": "tsm0"}, {"modes": "eager-fp32,eager-fp32"}):
        args = {"modes": "eager-fp32", "models": "s2dnet", **bad}
        with pytest.raises(ValueError):
            check_args(cfg, 1, 1, 1, args["modes"], args["models"], "random")
    with pytest.raises(ValueError):
        check_args(cfg, 0, 1, 1, "eager-fp32", "s2dnet", "random")


def test_command(tmp_path):
    path = tmp_path / "out.json"
    runner = CliRunner()
    args = ["--json", str(path), "--batch-size", "1", "--batches", "1", "--repeats", "1", "--modes", "eager-fp32",
            "--models", "tsm4,s2dnet", "--inputs", "random", "--roofline-size", "128", *TINY]
    result = runner.invoke(bench_eval_command, args)
    assert result.exit_code == 0, result.output
    assert "S2DNet vs TSM-resnet18 4x32" in result.output
    assert [row["model"] for row in json.loads(path.read_text())["rows"]] == ["tsm4", "s2dnet"]

    bad = runner.invoke(bench_eval_command, ["--modes", "fast-fp32", *TINY])
    assert bad.exit_code == 2 and "unknown mode" in bad.output
    assert isinstance(bench_eval_command, click.Command)
