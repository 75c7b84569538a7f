"""The command line as a user types it: train, eval, the paper's form, errors, export."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from s2d_fast.cli import main
from s2d_fast.cli_support import split_positionals

from helpers import tiny_run

REPO = Path(__file__).resolve().parents[1]


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_train_warmup_sampling_eval_export(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    warm = run("train", "--stage", "warmup", *tiny_run(tiny_dataset, out))
    assert warm.exit_code == 0, warm.output
    assert "top1" in warm.output and (out / "checkpoints" / "warmup-last.pt").is_file()
    assert (out / "config_warmup.yaml").is_file() and (out / "log_warmup.txt").is_file()

    # sampling starts from this output folder's warmup checkpoint
    samp = run("train", "--stage", "sampling", *tiny_run(tiny_dataset, out))
    assert samp.exit_code == 0, samp.output
    state = torch.load(out / "checkpoints" / "sampling-last.pt", weights_only=True)
    assert state["stage"] == "sampling" and state["epoch"] == 1
    assert "warmup-last.pt" in (out / "log_sampling.txt").read_text()

    js, preds = tmp_path / "metrics.json", tmp_path / "preds.jsonl"
    ev = run("eval", "--json", str(js), *tiny_run(tiny_dataset, out, "TEST.PREDICTIONS", str(preds)))
    assert ev.exit_code == 0, ev.output
    metrics = json.loads(js.read_text())
    assert {"top1", "top5", "mAP", "num_videos", "videos_per_second", "gflops_per_video"} <= set(metrics)
    assert metrics["num_videos"] == 12 and metrics["checkpoint"]["stage"] == "sampling"
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 100
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    listed = [line.split()[0] for line in (tiny_dataset / "val.txt").read_text().splitlines()]
    assert [r["video"] for r in rows] == listed and all(len(r["top"]) == 5 for r in rows)
    hits = sum(r["top"][0][0] == r["label"] for r in rows)
    assert metrics["top1"] == pytest.approx(100 * hits / 12)

    # the paper's EVALUATE True form evaluates the named checkpoint
    again = run("train", *tiny_run(tiny_dataset, out, "EVALUATE", "True",
                                   "TRAIN.RESUME", str(out / "checkpoints" / "warmup-last.pt")))
    assert again.exit_code == 0 and "top1" in again.output

    st = tmp_path / "w.safetensors"
    ex = run("export", "--checkpoint", str(out / "checkpoints" / "sampling-last.pt"), "--out", str(st))
    assert ex.exit_code == 0, ex.output
    from safetensors.torch import load_file

    weights = load_file(str(st))
    assert torch.equal(weights["classifier.weight"], state["model"]["classifier.weight"])


def test_papers_command_fails_naming_the_missing_list(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("S2D_MINI_KINETICS_ROOT", raising=False)
    result = CliRunner().invoke(main, [
        "train", "mini-kinetics", str(REPO / "configs/mini_kinetics/train_warmup.yaml"),
        "NUM_GPUS", "0", "TRAIN.BASE_LR", "1e-5", "TRAIN.BATCH_SIZE", "4", "SNET.ARCH", "mobilenetv2",
        "SNET.PRETRAINED", "none", "DNET.PRETRAINED", "none",
    ])
    assert result.exit_code == 1
    assert "training list file not found: data/mini-kinetics/train.txt" in result.output
    assert "DATA.TRAIN_LIST" in result.output and "Traceback" not in result.output


def test_unknown_key_names_the_nearest():
    result = CliRunner().invoke(main, ["train", "--stage", "warmup", "TRAIN.BASE_LRR", "0.1"])
    assert result.exit_code == 1
    assert "unknown config key TRAIN.BASE_LRR; did you mean TRAIN.BASE_LR" in result.output


def test_sampling_without_warmup_says_what_to_do(tiny_dataset, tmp_path):
    result = CliRunner().invoke(main, ["train", "--stage", "sampling", *tiny_run(tiny_dataset, tmp_path / "empty")])
    assert result.exit_code == 1
    assert "starts from a warmup checkpoint" in result.output and "TRAIN.RESUME" in result.output


def test_split_positionals():
    assert split_positionals(("mini-kinetics", "a.yaml", "NUM_GPUS", "2")) == ("mini-kinetics", "a.yaml", ["NUM_GPUS", "2"])
    assert split_positionals(("a.yml",)) == (None, "a.yml", [])
    assert split_positionals(("TRAIN.BASE_LR", "0.1")) == (None, None, ["TRAIN.BASE_LR", "0.1"])


def test_help_lists_only_working_commands():
    result = CliRunner().invoke(main, ["--help"])
    for command in ("train", "eval", "prepare", "flops", "bench", "export"):
        assert command in result.output
    assert "KEY VALUE" in CliRunner().invoke(main, ["train", "--help"]).output


def test_eval_counts_unreadable_videos_as_wrong_and_lists_them(tiny_dataset, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    first_val = (data / "val.txt").read_text().split()[0]
    (data / first_val).write_bytes(b"not a video")
    out = tmp_path / "run"
    assert run("train", *tiny_run(data, out, "TRAIN.STAGE", "warmup", "TRAIN.EVAL_PERIOD", "5")).exit_code == 0
    js = tmp_path / "m.json"
    result = run("eval", "--json", str(js), *tiny_run(data, out))
    assert result.exit_code == 0, result.output
    metrics = json.loads(js.read_text())
    assert metrics["unreadable"] == 1 and metrics["num_videos"] == 12
    assert metrics["unreadable_videos"][0]["path"].endswith(first_val)
    assert "1 videos could not be read" in result.output


def test_train_without_validation_never_reads_the_validation_list(tiny_dataset, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    (data / "val.txt").write_text("not/a/video.webm 3\n")  # would be an unreadable video
    out = tmp_path / "run"
    result = run("train", *tiny_run(data, out, "TRAIN.STAGE", "warmup", "TRAIN.EVAL_PERIOD", "0"))
    assert result.exit_code == 0, result.output
    log = (out / "log_warmup.txt").read_text()
    assert "24 training videos and no validation (TRAIN.EVAL_PERIOD 0)" in log and " val top1=" not in log
    assert "top1" not in result.output
    assert (out / "checkpoints" / "warmup-last.pt").is_file() and not (out / "checkpoints" / "warmup-best.pt").exists()


def test_predict_prints_top5_and_writes_the_picture(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    assert run("train", *tiny_run(tiny_dataset, out, "TRAIN.STAGE", "warmup")).exit_code == 0
    video = tiny_dataset / (tiny_dataset / "val.txt").read_text().split()[0]
    png = tmp_path / "seen.png"
    # the model's config comes as KEY VALUE pairs after the video, as for train and eval
    result = run("predict", str(video), "--checkpoint", str(out / "checkpoints" / "warmup-last.pt"),
                 "--save-vis", str(png), *tiny_run(tiny_dataset, out))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()  # stderr has the log: the inference settings
    assert lines[0] == str(video) and len([l for l in lines if l.startswith("  0.")]) == 5
    assert "inference: " in result.stderr
    assert png.is_file() and f"wrote {png}" in result.output
    missing = CliRunner().invoke(main, ["predict", str(tmp_path / "nope.webm"), "--checkpoint",
                                        str(out / "checkpoints" / "warmup-last.pt"), *tiny_run(tiny_dataset, out)])
    assert missing.exit_code == 1 and "nope.webm" in missing.output
