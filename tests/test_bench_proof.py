"""`bench proof` on the tiny dataset: every recipe trains with its own config, the sampling rows
start from their warmup, the table adds up, and a rerun continues instead of training again."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch
import pytest
from click.testing import CliRunner

from s2d_fast.bench import proof
from s2d_fast.config import ConfigError, load_config

from helpers import tiny_run


def _overrides(root):
    pairs = tiny_run(root, "unused")
    cut = pairs.index("OUTPUT_DIR")
    return pairs[:cut] + pairs[cut + 2:]


def test_recipes_differ_only_where_they_should():
    cfgs = {r.name: proof.recipe_config(r, 1, proof.Path("/tmp/out"), []) for r in proof.RECIPES}

    def detail_network(cfg):
        return cfg.DNET.ARCH, cfg.DNET.NUM_FRAMES, cfg.DNET.INPUT_SIZE, cfg.DNET.DROPOUT

    for name, cfg in cfgs.items():
        assert cfg.SYNTHETIC.SEED == cfg.RNG_SEED == 1
        assert cfg.SYNTHETIC.NUM_VAL == 600
        if name != "synopsis":
            assert detail_network(cfg) == detail_network(cfgs["uniform"])
    assert not cfgs["uniform"].S2D.DETAIL_SAMPLING
    # The synopsis recipe is a plain TSM shaped as S2DNet's SNet, and every S2DNet recipe's SNet
    # starts from it.
    synopsis, warmup = cfgs["synopsis"], cfgs["s2dnet-warmup"]
    assert not synopsis.S2D.DETAIL_SAMPLING
    assert (synopsis.DNET.ARCH, synopsis.DNET.NUM_FRAMES, synopsis.DNET.INPUT_SIZE) == (
        warmup.SNET.ARCH, warmup.SNET.NUM_FRAMES, warmup.SNET.INPUT_SIZE)
    for name in ("s2dnet-warmup", "s2dnet", "s2dnet-learned", "temporal-only", "spatial-only"):
        assert cfgs[name].SNET.PRETRAINED == "/tmp/out/seed1/synopsis/checkpoints/warmup-last.pt"
    # With 600 validation videos a two-seed mean top-1 has a standard error <= 1.5 points at
    # any accuracy (the worst is 50%).
    assert proof.top1_standard_error([{"top1": 50.0, "num_videos": 600}] * 2) <= 1.5
    # The baseline trains as long as S2DNet's two stages together.
    assert cfgs["uniform"].TRAIN.EPOCHS == cfgs["s2dnet-warmup"].TRAIN.EPOCHS + cfgs["s2dnet"].TRAIN.EPOCHS
    assert cfgs["s2dnet"].TRAIN.STAGE == "sampling"
    # The sampling stage fine-tunes at a tenth of the warmup's rate (at the same rate it unlearnt
    # part of the tiles warmup).
    assert cfgs["s2dnet"].TRAIN.BASE_LR == pytest.approx(cfgs["s2dnet-warmup"].TRAIN.BASE_LR / 10)
    assert cfgs["s2dnet"].TRAIN.RESUME == "/tmp/out/seed1/s2dnet-warmup/checkpoints/warmup-last.pt"
    assert not cfgs["temporal-only"].S2D.SPATIAL_SAMPLING and cfgs["temporal-only"].S2D.TEMPORAL_SAMPLING
    assert not cfgs["spatial-only"].S2D.TEMPORAL_SAMPLING and cfgs["spatial-only"].S2D.SPATIAL_SAMPLING
    # The built-in sampling stage holds f_theta at the warmup's placement; the learned one and
    # its ablations differ from it only in f_theta learning (and on which axes).
    assert cfgs["s2dnet"].S2D.SAMPLER_LR_RATIO == 0 and cfgs["s2dnet-learned"].S2D.SAMPLER_LR_RATIO > 0
    for name in ("s2dnet-learned", "temporal-only", "spatial-only"):
        assert cfgs[name].TRAIN.EPOCHS == cfgs["s2dnet"].TRAIN.EPOCHS
        assert cfgs[name].TRAIN.BASE_LR == cfgs["s2dnet"].TRAIN.BASE_LR
        assert cfgs[name].TRAIN.RESUME == cfgs["s2dnet"].TRAIN.RESUME
        assert cfgs[name].S2D.SAMPLER_LR_RATIO == cfgs["s2dnet-learned"].S2D.SAMPLER_LR_RATIO
        assert cfgs[name].S2D.EVIDENCE_LOSS_WEIGHT == cfgs["s2dnet-learned"].S2D.EVIDENCE_LOSS_WEIGHT


def test_proof_trains_every_recipe_and_continues(tiny_dataset, tmp_path, monkeypatch):
    out = tmp_path / "proof"
    summary = proof.run_proof([0], out / "tiles", _overrides(tiny_dataset))
    assert [row["recipe"] for row in summary["rows"]] == [r.name for r in proof.RECIPES]
    rows = {row["recipe"]: row for row in summary["rows"]}
    runs = {r["recipe"]: r for r in summary["runs"]}
    for name, row in rows.items():
        assert 0 <= row["top1_mean"] <= 100 and row["top1_per_seed"] == [runs[name]["top1"]]
        assert row["gflops_per_video"] > 0
        assert (out / "tiles" / "seed0" / name / "result.json").is_file()
    # Every override said TRAIN.EPOCHS 1: a sampling row counts its warmup's epoch and minutes,
    # the warmup its synopsis network's; the synopsis network's epochs are counted apart.
    assert rows["uniform"]["epochs"] == rows["synopsis"]["epochs"] == rows["s2dnet-warmup"]["epochs"] == 1
    assert rows["s2dnet"]["epochs"] == 2
    assert rows["uniform"]["snet_pretrain_epochs"] == rows["synopsis"]["snet_pretrain_epochs"] == 0
    assert rows["s2dnet-warmup"]["snet_pretrain_epochs"] == rows["s2dnet"]["snet_pretrain_epochs"] == 1
    assert runs["s2dnet"]["train_minutes"] > runs["s2dnet-warmup"]["train_minutes"] > runs["synopsis"]["train_minutes"]
    # Validated once, by where_it_looks, not also by the trainer.
    assert "and no validation (TRAIN.EVAL_PERIOD 0)" in (out / "tiles" / "seed0" / "s2dnet" / "log_sampling.txt").read_text()
    synopsis = out / "tiles" / "seed0" / "synopsis" / "checkpoints" / "warmup-last.pt"
    assert f"SNet starts from the plain TSM of s2d-fast checkpoint {synopsis}" in (
        out / "tiles" / "seed0" / "s2dnet-warmup" / "log_warmup.txt").read_text()
    # S2DNet costs more than the uniform baseline's DNet alone; the sampling rows start from the warmup.
    assert rows["s2dnet"]["gflops_per_video"] > rows["uniform"]["gflops_per_video"]
    warmup = out / "tiles" / "seed0" / "s2dnet-warmup" / "checkpoints" / "warmup-last.pt"
    held = "f_theta is held (S2D.SAMPLER_LR_RATIO 0): the networks train on where the warmup sampled"
    for name in ("s2dnet", "s2dnet-learned", "temporal-only", "spatial-only"):
        log = (out / "tiles" / "seed0" / name / "log_sampling.txt").read_text()
        assert f"loaded {warmup}" in log
        assert (held in log) == (name == "s2dnet")
    differences = {(d["recipe"], d["against"]): d for d in summary["differences"]}
    assert set(differences) == set(proof.COMPARISONS)
    for (a, b), d in differences.items():  # one seed: the difference of the two top-1s, on the same videos
        assert d["top1_difference"] == pytest.approx(rows[a]["top1_mean"] - rows[b]["top1_mean"])
        assert d["top1_difference_se"] >= 0
    for r in runs.values():
        assert len(r["correct"]) == r["num_videos"] and 100 * r["correct"].count("1") / r["num_videos"] == pytest.approx(r["top1"])

    assert runs["uniform"]["cue_in_window"] == 1.0 and runs["uniform"]["zoom"] == 1.0  # whole frames
    # The built-in warmup and its held sampling stage: windows at SNet's evidence, at its zoom.
    zoom = load_config(str(proof.CONFIG_DIR / "train_warmup.yaml")).S2D.EVIDENCE_ZOOM
    for name in ("s2dnet-warmup", "s2dnet"):
        assert runs[name]["zoom"] == pytest.approx(zoom, abs=1e-4)
    assert all(0 <= r["cue_hit"] <= 1 for r in runs.values())
    for r in runs.values():  # the top-1 splits into videos with and without the cue in view
        shown, missed = r["top1_cue_shown"] or 0.0, r["top1_cue_missed"] or 0.0
        assert r["top1"] == pytest.approx(r["cue_hit"] * shown + (1 - r["cue_hit"]) * missed)

    # A second run reads the results instead of training, and writes the same table; a result
    # from before the proof measured where the sampler looks gets those figures added.
    def no_training(cfg):
        raise AssertionError("trained again")

    old = out / "tiles" / "seed0" / "s2dnet" / "result.json"
    looked = ("correct", "cue_hit", "cue_in_window", "zoom", "top1_cue_shown", "top1_cue_missed", "group_top1",
              "groups", "group_top1_per_group", "cue_hit_per_group")
    older = {k: v for k, v in json.loads(old.read_text()).items() if k not in looked}
    old.write_text(json.dumps(older))

    monkeypatch.setattr("s2d_fast.bench.proof.train", no_training)
    result = CliRunner().invoke(proof.bench_proof_command, ["--seeds", "0", "--out", str(out), "--tasks", "tiles",
                                                              *_overrides(tiny_dataset)])
    assert result.exit_code == 0, result.output
    assert "| s2dnet | S2DNet, warmup then sampling |" in result.output
    assert "- s2dnet minus s2dnet-warmup: " in result.output
    written = json.loads((out / "tiles" / "proof.json").read_text())
    assert written["rows"] == json.loads(json.dumps(summary["rows"]))
    assert json.loads((out / "proof.json").read_text())["tasks"]["tiles"]["rows"] == written["rows"]
    assert json.loads(old.read_text())["cue_hit"] == runs["s2dnet"]["cue_hit"]
    assert json.loads(old.read_text())["group_top1"] == runs["s2dnet"]["group_top1"]
    assert json.loads(old.read_text())["cue_hit_per_group"] == runs["s2dnet"]["cue_hit_per_group"]
    assert "Cue in a detail frame per true colour group (mean of seeds 0; red, yellow, blue, green):" in result.output
    assert (out / "tiles" / "proof.md").read_text() == proof.format_markdown(summary)
    assert (out / "proof.md").read_text() == "### tiles\n\n" + proof.format_markdown(summary)


def test_parallel_jobs_train_each_run_after_its_start(tiny_dataset, tmp_path, monkeypatch, capfd):
    """`--jobs 2`: runs of two seeds train two at a time in worker processes, each sampling stage
    from its own seed's warmup, the trainer's lines in the run's console.txt and the proof's
    progress on the console; a rerun reads every result back without a worker, but for one that
    needs looking at again."""
    out = tmp_path / "tiles"
    recipes = ["uniform", "synopsis", "s2dnet-warmup", "s2dnet"]
    summary = proof.run_proof([0, 1], out, _overrides(tiny_dataset), recipes, jobs=2)
    runs = {(r["recipe"], r["seed"]): r for r in summary["runs"]}
    assert sorted(runs) == sorted((name, seed) for name in recipes for seed in (0, 1))
    progress = capfd.readouterr().err
    for seed in (0, 1):
        folder = out / f"seed{seed}"
        warmup = folder / "s2dnet-warmup" / "checkpoints" / "warmup-last.pt"
        assert f"loaded {warmup}" in (folder / "s2dnet" / "log_sampling.txt").read_text()
        assert runs["s2dnet", seed]["epochs"] == 2
        assert runs["s2dnet", seed]["train_minutes"] > runs["s2dnet-warmup", seed]["train_minutes"] > runs[
            "synopsis", seed]["train_minutes"]
        for name in recipes:
            assert "training videos and no validation" in (folder / name / "console.txt").read_text()
            assert f"tiles seed {seed}: training {name} (" in progress
    assert [row["top1_per_seed"] for row in summary["rows"]] == [
        [runs[name, 0]["top1"], runs[name, 1]["top1"]] for name in recipes]

    # A result written before the proof looked at everything it looks at now is looked at again
    # in a worker (this process neither trains nor looks).
    stale = out / "seed1" / "s2dnet" / "result.json"
    looked = json.loads(stale.read_text())
    stale.write_text(json.dumps({k: v for k, v in looked.items() if k != "cue_hit_per_group"}))
    monkeypatch.setattr("s2d_fast.bench.proof.train", lambda cfg: pytest.fail("trained again"))
    monkeypatch.setattr("s2d_fast.bench.proof.where_it_looks", lambda cfg, path: pytest.fail("looked here"))
    again = proof.run_proof([0, 1], out, _overrides(tiny_dataset), recipes, jobs=2)
    assert again["rows"] == summary["rows"]
    assert json.loads(stale.read_text()) == looked


def test_a_stopped_parallel_proof_stops_its_runs_with_a_checkpoint(tiny_dataset, tmp_path):
    """SIGTERM to the proof alone (as a batch system sends it) reaches the runs in its workers:
    each writes a checkpoint and stops, and the proof says how to continue, with no traceback."""
    out = tmp_path / "proof"
    command = [sys.executable, "-m", "s2d_fast", "bench", "proof", "--tasks", "tiles", "--seeds", "0",
               "--recipes", "uniform,synopsis", "--jobs", "2", "--out", str(out), *_overrides(tiny_dataset),
               "TRAIN.EPOCHS", "50"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_first_epochs(out / "tiles" / "seed0", ("uniform", "synopsis"))  # both runs are training
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    returncode = proc.returncode
    assert returncode == 1, output
    assert "stopped: the runs in progress saved their checkpoints; run the proof again with the same --out" in output
    assert "Traceback" not in output
    for name in ("uniform", "synopsis"):
        state = torch.load(out / "tiles" / "seed0" / name / "checkpoints" / "warmup-last.pt", weights_only=True)
        assert 0 < state["epoch"] < 50 or state["iteration"] > 0
        assert "checkpoint written" in (out / "tiles" / "seed0" / name / "log_warmup.txt").read_text()


def _wait_for_first_epochs(folder, names, timeout=300.0) -> list[Path]:
    """The runs' training logs, once each shows its first epoch (or after `timeout` s)."""
    logs = [folder / name / "log_warmup.txt" for name in names]
    deadline = time.time() + timeout
    while time.time() < deadline and not all(log.exists() and "epoch 1/" in log.read_text() for log in logs):
        time.sleep(0.1)
    return logs


def test_bad_arguments_fail_before_training(tmp_path, monkeypatch):
    def no_training(cfg):
        raise AssertionError("trained")

    monkeypatch.setattr("s2d_fast.bench.proof.train", no_training)
    with pytest.raises(click.UsageError, match="unknown recipe 'baseline'; recipes: uniform, synopsis, s2dnet-warmup"):
        proof.run_proof([0], tmp_path, [], ["baseline"])
    with pytest.raises(click.UsageError, match="recipe s2dnet starts from synopsis: list both"):
        proof.run_proof([0], tmp_path, [], ["s2dnet"])
    with pytest.raises(click.UsageError, match="recipe s2dnet starts from s2dnet-warmup: list both"):
        proof.run_proof([0], tmp_path, [], ["synopsis", "s2dnet"])
    with pytest.raises(ConfigError, match="TRAIN.EPOCH"):
        proof.run_proof([0], tmp_path, ["TRAIN.EPOCH", "3"], ["uniform"])
    result = CliRunner().invoke(proof.bench_proof_command, ["--seeds", "zero", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--seeds takes comma-separated integers; got 'zero'" in result.output
    with pytest.raises(click.UsageError, match="unknown task 'squares'; tasks: tiles, balls"):
        proof.run_tasks(["squares"], [0], tmp_path, [])
    with pytest.raises(click.UsageError, match="choose the built-in tasks with --tasks, not SYNTHETIC.TASK"):
        proof.run_tasks(["tiles"], [0], tmp_path, ["SYNTHETIC.TASK", "balls"])


def test_a_dataset_folder_must_hold_the_task(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr("s2d_fast.bench.proof.train", lambda cfg: pytest.fail("trained"))
    result = CliRunner().invoke(proof.bench_proof_command, ["--seeds", "0", "--out", str(tmp_path), "--tasks", "balls",
                                                            *_overrides(tiny_dataset)])
    assert result.exit_code == 2
    assert f"DATA.ROOT {tiny_dataset} holds the tiles task, not balls (--tasks)" in result.output


def _checkpoint(cfg, path, space_bias=None):
    from s2d_fast.checkpoint import save_checkpoint
    from s2d_fast.models import build_model

    torch.manual_seed(0)
    model = build_model(cfg, 12)
    model.set_stage("sampling")
    if space_bias is not None:
        with torch.no_grad():
            model.space_head.bias.copy_(torch.tensor(space_bias).repeat(cfg.DNET.NUM_FRAMES))
    save_checkpoint({"model": model.state_dict(), "stage": "sampling", "epoch": 1, "num_classes": 12}, path)
    return path


def test_where_it_looks_follows_the_sampler(tiny_dataset, tmp_path):
    """The identity sampler looks where the uniform baseline does, at whole frames that hold the
    cue; a sampler zoomed 20x into the top-left corner never holds it (the generator keeps the cue
    an eighth of the side away from the edges)."""
    from s2d_fast.data.synthetic import render_video
    from s2d_fast.data import clip_indices
    from s2d_fast.models.sampler import uniform_indices

    s2d = load_config(None, _overrides(tiny_dataset) + ["S2D.FAST_PATH", "False"])
    uniform = load_config(None, _overrides(tiny_dataset) + ["S2D.DETAIL_SAMPLING", "False"])
    identity = proof.where_it_looks(s2d, _checkpoint(s2d, tmp_path / "identity.pt"))
    baseline = proof.where_it_looks(uniform, _checkpoint(uniform, tmp_path / "uniform.pt"))
    corner = proof.where_it_looks(s2d, _checkpoint(s2d, tmp_path / "corner.pt", [-3.0, -3.0, -3.0, -3.0]))

    # By hand: the 4 uniform detail frames among 8 candidates of each 16-frame validation video.
    frames, _ = clip_indices(16, 8, 1)
    picked = frames[uniform_indices(torch.tensor([8]), 4)[0].numpy()]
    cues = [render_video(3, "val", i, frame_size=64, num_frames=16)[2] for i in range(12)]
    on = [any(cue["start"] <= f < cue["start"] + cue["length"] for f in picked) for cue in cues]
    expected = sum(on) / 12
    assert baseline["cue_hit"] == pytest.approx(expected) and 0 < expected < 1
    assert baseline["groups"] == ["red", "yellow", "blue", "green"]
    assert baseline["cue_hit_per_group"] == pytest.approx(
        [100 * np.mean([hit for hit, cue in zip(on, cues) if cue["group"] == g]) for g in baseline["groups"]])
    assert identity["cue_hit"] == pytest.approx(expected)
    assert identity["cue_in_window"] == 1.0 and identity["zoom"] == pytest.approx(1.0)
    assert corner["cue_hit"] == pytest.approx(expected)  # only the window moved
    assert corner["cue_in_window"] == 0.0 and corner["zoom"] == pytest.approx(float(np.exp(3.0)), rel=1e-4)

    # The same pass scores the checkpoint as `s2d-fast eval` does (the proof validates nothing else).
    from s2d_fast.engine.evaluate import evaluate_checkpoint

    keys = ("top1", "top5", "mAP", "num_videos")
    for cfg, looked, name in ((s2d, identity, "identity.pt"), (uniform, baseline, "uniform.pt")):
        scored = evaluate_checkpoint(cfg, tmp_path / name).value
        assert {k: looked[k] for k in keys} == pytest.approx({k: scored[k] for k in keys})
        assert 100 * looked["correct"].count("1") / looked["num_videos"] == pytest.approx(looked["top1"])


def test_group_right_counts_the_colour_group_of_the_top_class(tiny_dataset, tmp_path):
    """A model that always answers class 4 (yellow-columns) is right about the group on the
    videos of yellow's three classes, and about the class on class 4's alone."""
    from s2d_fast.checkpoint import save_checkpoint
    from s2d_fast.data.synthetic import render_video
    from s2d_fast.models import build_model

    cfg = load_config(None, _overrides(tiny_dataset) + ["S2D.DETAIL_SAMPLING", "False"])
    model = build_model(cfg, 12)
    with torch.no_grad():
        model.dnet.fc.weight.zero_()
        model.dnet.fc.bias.copy_(10.0 * (torch.arange(12) == 4))
    save_checkpoint({"model": model.state_dict(), "stage": "warmup", "epoch": 1, "num_classes": 12}, tmp_path / "four.pt")
    looked = proof.where_it_looks(cfg, tmp_path / "four.pt")
    groups = [render_video(3, "val", i, frame_size=64, num_frames=16)[2]["group"] for i in range(12)]
    assert looked["group_top1"] == pytest.approx(100 * groups.count("yellow") / 12) and "yellow" in groups
    assert looked["group_top1_per_group"] == [0.0, 100.0, 0.0, 0.0]  # red, yellow, blue, green
    assert looked["top1"] == pytest.approx(100 * sum(render_video(3, "val", i, frame_size=64, num_frames=16)[1] == 4
                                                     for i in range(12)) / 12)


def test_standard_errors_of_top1_and_of_paired_differences():
    # Two seeds of 4 videos each: seed 0 top-1 50 (1100), seed 1 top-1 75 (1110).
    runs = [{"seed": 0, "top1": 50.0, "num_videos": 4, "correct": "1100"},
            {"seed": 1, "top1": 75.0, "num_videos": 4, "correct": "1110"}]
    assert proof.top1_standard_error(runs) == pytest.approx(((50 * 50 / 4 + 75 * 25 / 4) ** 0.5) / 2)
    # Against a recipe right on the same videos plus one: every difference is 0 or -100.
    better = [{"seed": 1, "top1": 100.0, "num_videos": 4, "correct": "1111"},
              {"seed": 0, "top1": 75.0, "num_videos": 4, "correct": "1110"}]
    mean, se = proof.paired_difference(runs, better)
    assert mean == pytest.approx(-25.0)
    per_seed_variance = np.var([0, 0, -100, 0], ddof=1) / 4  # each seed differs on one video of 4
    assert se == pytest.approx((2 * per_seed_variance) ** 0.5 / 2)
    assert proof.paired_difference(runs, runs) == (0.0, 0.0)
