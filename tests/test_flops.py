"""FLOP and parameter counts: TSM as its paper reports it, and S2DNet's breakdown."""

import pytest

from s2d_fast.config import load_config
from s2d_fast.data import resolve_num_classes
from s2d_fast.models.flops import flops_report, format_flops_table, tsm_flops
from s2d_fast.models.sampler import tap_radius

SMALL = [
    "DATA.NUM_CANDIDATES", "12", "DATA.CROP_SIZE", "48",
    "SNET.ARCH", "mobilenetv2", "SNET.NUM_FRAMES", "4", "SNET.INPUT_SIZE", "32",
    "DNET.ARCH", "resnet18", "DNET.NUM_FRAMES", "4", "DNET.INPUT_SIZE", "40",
    "S2D.THETA_CHANNELS", "16", "S2D.EMBED_DIM", "8", "S2D.CONTEXT_DIM", "16",
]


def test_tsm_resnet50_as_the_tsm_paper_reports():
    gflops, params_m = tsm_flops("resnet50", 8, 224, 400)
    assert gflops == pytest.approx(32.9, rel=0.01)
    assert params_m == pytest.approx(24.3, abs=0.05)


def test_s2d_components_add_up_and_match_their_parts():
    cfg = load_config(None, SMALL)
    report = flops_report(cfg, num_classes=10)
    parts = {row["part"]: row for row in report["components"]}
    assert list(parts) == ["snet", "f_theta", "sampling", "f_m", "dnet", "snet_input"]
    total = report["total"]
    assert sum(r["gflops"] for r in report["components"]) == pytest.approx(total["gflops"], rel=1e-9)
    assert sum(r["params_m"] for r in report["components"]) == pytest.approx(total["params_m"], rel=1e-9)
    assert all(r["gflops"] > 0 for r in report["components"])

    # The detail network with its share of the classifier costs what plain TSM on K frames costs,
    # and so does the uniform baseline, plus reading its K frames (one MAC per value) and resizing
    # them from 48 to 40 (4 per value).
    tsm_k = tsm_flops("resnet18", 4, 40, 10)
    assert parts["dnet"]["gflops"] == pytest.approx(tsm_k[0], rel=1e-9)
    assert parts["dnet"]["params_m"] == pytest.approx(tsm_k[1], rel=1e-9)
    uniform, plain_k, plain_2k, plain_crop = report["baselines"]
    assert plain_crop["component"] == "TSM-resnet18 4x48"
    assert plain_crop["gflops"] == pytest.approx(tsm_flops("resnet18", 4, 48, 10)[0], rel=1e-9)
    assert plain_k["gflops"] == pytest.approx(tsm_k[0], rel=1e-9)
    assert uniform["gflops"] * 1e9 == pytest.approx(tsm_k[0] * 1e9 + 4 * 3 * 48 * 48 + 4 * 4 * 3 * 40 * 40, rel=1e-9)
    assert plain_2k["gflops"] == pytest.approx(2 * tsm_k[0], rel=0.01)
    assert parts["snet"]["gflops"] == pytest.approx(tsm_flops("mobilenetv2", 4, 32, 10)[0], rel=1e-9)

    # Sampling: P temporal taps per detail value, then the row and column filter banks.
    k, c, s, h = 4, 3, 40, 48
    taps = 2 * tap_radius(cfg.S2D.TEMPORAL_SIGMA, cfg.S2D.FAST_PATH_EPS) + 1
    expected = k * c * h * h * taps + k * c * s * h * h + k * c * s * s * h
    assert parts["sampling"]["gflops"] * 1e9 == pytest.approx(expected, rel=1e-9)
    # The SNet's input: 4 uniform frames read (one MAC per value), resized as bilinear (4 per value).
    assert parts["snet_input"]["gflops"] * 1e9 == pytest.approx(4 * c * h * h + 4 * 4 * c * 32 * 32, rel=1e-9)
    assert "aten::topk" in report["skipped_ops"]

    table = format_flops_table(report)
    assert "S2DNet total" in table and "TSM-resnet18 8x40" in table and "10 classes (given)" in table
    assert "fvcore: one multiply-add = one flop" in table.splitlines()[0]
    assert f"{total['gflops']:.3f}" in table


def test_uniform_config_reports_baselines_only():
    report = flops_report(load_config(None, SMALL + ["S2D.DETAIL_SAMPLING", "False"]), num_classes=5)
    assert report["components"] == [] and report["total"] is None
    assert [r["component"] for r in report["baselines"]][1:] == ["TSM-resnet18 4x40", "TSM-resnet18 8x40",
                                                                 "TSM-resnet18 4x48"]
    assert [r["part"] for r in report["baselines"]] == ["uniform", "tsm_4x40", "tsm_8x40", "tsm_4x48"]
    assert "S2DNet total" not in format_flops_table(report)


def test_class_count_from_config_dataset_or_assumed():
    cfg = load_config(None, ["DATA.DATASET", "kinetics400"])
    assert resolve_num_classes(cfg) == (400, "dataset kinetics400")
    cfg = load_config(None, ["DATA.DATASET", "somethingv2", "DATA.NUM_CLASS", "7"])
    assert resolve_num_classes(cfg) == (7, "DATA.NUM_CLASS")
    cfg.defrost()
    cfg.DATA.NUM_CLASS, cfg.DATA.DATASET = 0, "my-videos"
    count, source = resolve_num_classes(cfg)
    assert count == 400 and "assumed" in source and "my-videos" in source


def test_fvcore_counts_an_s2d_fast_backbone_as_it_is():
    """The shift is a custom op in the trace: fvcore counts the network without any patching,
    and `count_flops` only adds what each op costs (the shift: nothing)."""
    import torch
    from fvcore.nn import FlopCountAnalysis

    from s2d_fast.models import tsm_backbone
    from s2d_fast.models.flops import count_flops

    net = tsm_backbone("resnet50", num_segments=8, num_classes=400).eval()
    x = torch.zeros(1, 8, 3, 224, 224)
    plain = FlopCountAnalysis(net, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert plain.total() / 1e9 == pytest.approx(32.9, rel=0.01)
    assert plain.unsupported_ops()["s2d_fast::temporal_shift"] == 16  # every bottleneck shifts
    counted = count_flops(net, (x,))
    assert counted.total() == plain.total() and "s2d_fast::temporal_shift" not in counted.unsupported_ops()


def test_a_sampler_steered_by_snet_saliency_counts_its_backward_pass():
    """S2D.SAMPLER_ANCHOR evidence with S2D.EVIDENCE_MAP saliency runs SNet backward to its input
    at inference: the table adds it as one SNet forward, and the total and the proof's GFLOPs
    include it."""
    from s2d_fast.models.flops import config_gflops

    plain = load_config(None, SMALL)
    steered = load_config(None, SMALL + ["S2D.SAMPLER_ANCHOR", "evidence", "S2D.EVIDENCE_MAP", "saliency"])
    rows = {r["part"]: r for r in flops_report(steered, num_classes=5)["components"]}
    assert rows["saliency"]["gflops"] == pytest.approx(rows["snet"]["gflops"]) and rows["snet"]["gflops"] > 0
    assert "saliency" not in {r["part"] for r in flops_report(plain, num_classes=5)["components"]}
    extra = config_gflops(steered, 5) - config_gflops(plain, 5)
    assert extra == pytest.approx(rows["saliency"]["gflops"], rel=0.05)
