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
