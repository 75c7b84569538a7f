"""The benchmarks run end to end on a tiny dataset (what they measure is theirs to report)."""

from s2d_fast.bench.data import bench_data
from s2d_fast.config import load_config

from helpers import tiny_run


def test_bench_data_reports_every_loader(tiny_dataset, tmp_path):
    cfg = load_config(None, tiny_run(tiny_dataset, tmp_path, "DATA.NUM_WORKERS", "1", "TRAIN.BATCH_SIZE", "4"))
    result = bench_data(cfg, num_batches=1, repeats=2, json_path=tmp_path / "data.json")
    assert set(result["rows"]) == {"dali", "pyav", "baseline"}
    assert result["rows"]["baseline"]["vs_baseline"] == 1.0
    assert all(len(row["runs_videos_per_s"]) == 2 and row["videos_per_s"] > 0 for row in result["rows"].values())
    assert (tmp_path / "data.json").is_file()


def test_bench_data_times_the_decoded_cache_in_a_later_epoch(tiny_dataset, tmp_path):
    cfg = load_config(None, tiny_run(tiny_dataset, tmp_path, "DATA.NUM_WORKERS", "0", "TRAIN.BATCH_SIZE", "2",
                                     "DATA.DECODED_CACHE_MB", "64"))
    result = bench_data(cfg, num_batches=1, backends=("pyav",), repeats=1)
    assert set(result["rows"]) == {"pyav", "pyav-cached", "baseline"}


def test_bench_train_times_every_mode(tiny_dataset, tmp_path):
    from s2d_fast.bench.train import bench_train

    cfg = load_config(None, tiny_run(tiny_dataset, tmp_path, "TRAIN.STAGE", "sampling"))
    result = bench_train(cfg, modes=["eager-fp32", "eager-bf16"], steps=1, warmup=1, repeats=2, device="cpu")
    assert set(result["videos_per_s"]) == {"eager-fp32", "eager-bf16"} and result["batch_size"] == 4
    assert all(len(runs) == 2 and v > 0 for runs, v in zip(result["runs"].values(), result["videos_per_s"].values()))
    assert all(loss == loss for loss in result["last_warmup_loss"].values())  # finite, not NaN


def test_bench_compiled_rows_compute_the_same_network(tmp_path):
    """Every row of `bench compiled` is the same network but for the shift: the shifted rows
    agree with each other exactly, and the table prints them all."""
    import torch

    from s2d_fast.bench.compiled import ROWS, bench_compiled, build_row

    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        outs = {row: build_row(row, "resnet18", 4, 10)(x) for row in ROWS}
    for row in ("slice writes", "opaque op", "TSM reference"):
        torch.testing.assert_close(outs[row], outs["s2d-fast"], rtol=0, atol=0)
    assert not torch.allclose(outs["unshifted"], outs["s2d-fast"])
    result = bench_compiled(arch="resnet18", videos=1, frames=4, size=32, repeats=1, modes=["eager-fp32"],
                            device="cpu", roofline_size=64, json_path=str(tmp_path / "c.json"))
    assert set(result["seconds"]) == set(ROWS) and (tmp_path / "c.json").is_file()


def test_gpu_check_dry_run_builds_every_section(tmp_path):
    """What CI runs of `s2d-fast bench gpu`: without a GPU every section builds its cases and
    says it needs CUDA to run; the JSON and the Markdown table are written."""
    import json

    from click.testing import CliRunner

    from s2d_fast.bench.gpu_check import SECTIONS, bench_gpu_command

    result = CliRunner().invoke(bench_gpu_command, ["--dry-run", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert list(report["sections"]) == list(SECTIONS)
    for name, entry in report["sections"].items():
        assert entry["status"].startswith("built (dry run)"), (name, entry)
    assert "collected" in report["sections"]["tests"]["result"]["summary"]
    assert len(report["sections"]["kernels"]["result"]["cases"]) >= 5
    assert "| tests | built (dry run): needs CUDA to run |" in (tmp_path / "gpu_check.md").read_text()
    plain = CliRunner().invoke(bench_gpu_command, ["--out", str(tmp_path / "real"), "--sections", "eval"])
    assert plain.exit_code == 1 and "needs CUDA" in (tmp_path / "real" / "gpu_check.md").read_text()
