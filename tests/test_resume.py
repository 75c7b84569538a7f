"""Checkpoints and resume: a run killed with SIGKILL and resumed ends with exactly the weights
of an uninterrupted run; SIGTERM checkpoints and exits cleanly; a NaN loss stops the run and
keeps the last good checkpoint; checkpoints that would run code are refused."""

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from s2d_fast.config import ConfigError, load_config
from s2d_fast.engine import trainer as trainer_module
from s2d_fast.models import S2DNet
from s2d_fast.checkpoint import CheckpointError, link_checkpoint, load_checkpoint, save_checkpoint
from s2d_fast.engine.distributed import DistContext

from helpers import signal_after_first_epoch, tiny_run

DETERMINISTIC = ["TRAIN.DETERMINISTIC", "True", "TRAIN.EPOCHS", "2", "TRAIN.CHECKPOINT_ITERS", "2",
                 "TRAIN.LOG_PERIOD", "2", "TRAIN.STAGE", "sampling", "TRAIN.AUTO_RESUME", "True"]


def _command(root, out, *extra):
    return [sys.executable, "-m", "s2d_fast", "train", *tiny_run(root, out, *DETERMINISTIC, *extra)]


def _env():
    # One thread: the same reduction order in every run, whatever else the machine is doing.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _start_from_warmup(root, out):
    """A warmup checkpoint for the sampling stage to start from, so f_theta trains too."""
    cfg = load_config(None, tiny_run(root, out, "TRAIN.EPOCHS", "0"))
    from s2d_fast.models import build_model

    torch.manual_seed(0)
    model = build_model(cfg, 12)
    save_checkpoint({"model": model.state_dict(), "stage": "warmup", "epoch": 0, "num_classes": 12},
                    Path(out) / "checkpoints" / "warmup-last.pt")


def test_sigkill_then_resume_gives_the_same_weights(tiny_dataset, tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    for out in (whole, broken):
        _start_from_warmup(tiny_dataset, out)
    subprocess.run(_command(tiny_dataset, whole), check=True, env=_env(), capture_output=True, timeout=600)

    last = broken / "checkpoints" / "sampling-last.pt"
    proc = subprocess.Popen(_command(tiny_dataset, broken), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists(), "the run ended before writing its first checkpoint"
    interrupted_at = torch.load(last, weights_only=True)
    assert (interrupted_at["epoch"], interrupted_at["iteration"]) < (2, 0)

    subprocess.run(_command(tiny_dataset, broken), check=True, env=_env(), capture_output=True, timeout=600)
    a = torch.load(whole / "checkpoints" / "sampling-last.pt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    # and the sampler did train, so the comparison covers f_theta
    assert a["model"]["space_head.weight"].abs().sum() > 0


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    _start_from_warmup(tiny_dataset, out)
    returncode, output = signal_after_first_epoch(
        _command(tiny_dataset, out, "TRAIN.EPOCHS", "50", "TRAIN.CHECKPOINT_ITERS", "0"), _env(),
        out / "log_sampling.txt", signal.SIGTERM)
    assert returncode == 143, output  # 128 + SIGTERM: an && chain stops here
    assert "SIGTERM received" in output
    assert "stopped at epoch" in output or "stopped after epoch" in output  # mid-epoch, or at its end
    assert "checkpoint written" in output
    assert "run the same command again to continue" in output
    state = torch.load(out / "checkpoints" / "sampling-last.pt", weights_only=True)
    assert state["epoch"] < 50


def test_a_stop_at_an_epochs_last_step_ends_the_epoch_and_writes_its_checkpoint(tiny_dataset, tmp_path):
    """A signal during the last step of an epoch: the epoch ends (validation, its checkpoint),
    then the run stops, so a rerun starts the next epoch instead of losing this one."""
    cfg = load_config(None, tiny_run(tiny_dataset, tmp_path, "TRAIN.EPOCHS", "3", "TRAIN.STAGE", "warmup"))
    trainer = trainer_module.Trainer(cfg, DistContext(0, 1, 0, torch.device("cpu")))
    steps, real_step = [], trainer.train_step

    def step_then_signal(batch, amp):
        steps.append(1)
        if len(steps) == trainer.batches_per_epoch:
            trainer.stop.signal = signal.SIGTERM
        return real_step(batch, amp)

    trainer.train_step = step_then_signal
    result = trainer.run()
    assert result["stopped"] and result["epoch"] == 1 and len(steps) == trainer.batches_per_epoch
    state = torch.load(tmp_path / "checkpoints" / "warmup-last.pt", weights_only=True)
    assert (state["epoch"], state["iteration"]) == (1, 0)
    assert result["metrics"]["num_videos"] == 12  # the epoch's validation ran


def test_training_time_counts_every_run_of_the_stage(tiny_dataset, tmp_path, monkeypatch):
    """A run stopped mid-epoch and resumed reports the stage's whole training time (what `bench
    proof` puts in a row's minutes), not only its own: each step takes 10 s of a fake clock."""
    clock = {"now": 0.0}
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: clock["now"])
    cfg = load_config(None, tiny_run(tiny_dataset, tmp_path, "TRAIN.EPOCHS", "2", "TRAIN.STAGE", "warmup",
                                     "TRAIN.EVAL_PERIOD", "0"))

    def run(stop_after: int | None) -> dict:
        trainer = trainer_module.Trainer(cfg, DistContext(0, 1, 0, torch.device("cpu")))
        steps, real_step = [], trainer.train_step

        def step(batch, amp):
            steps.append(1)
            clock["now"] += 10.0
            if len(steps) == stop_after:
                trainer.stop.signal = signal.SIGTERM
            return real_step(batch, amp)

        trainer.train_step = step
        return trainer.run()

    per_epoch = trainer_module.Trainer(cfg, DistContext(0, 1, 0, torch.device("cpu"))).batches_per_epoch
    assert per_epoch >= 2
    first = run(stop_after=per_epoch + 1)  # the second epoch's first step, then a stop
    assert first["stopped"] and first["train_seconds"] == pytest.approx(10.0 * (per_epoch + 1))
    state = torch.load(tmp_path / "checkpoints" / "warmup-last.pt", weights_only=True)
    assert (state["epoch"], state["iteration"], state["train_seconds"]) == (1, 1, pytest.approx(10.0 * (per_epoch + 1)))
    resumed = run(stop_after=None)
    assert not resumed["stopped"] and resumed["train_seconds"] == pytest.approx(10.0 * 2 * per_epoch)
    assert run(stop_after=None)["train_seconds"] == pytest.approx(10.0 * 2 * per_epoch)  # trained already: the same


def test_continuing_with_another_optimizer_is_refused_naming_the_checkpoint(tiny_dataset, tmp_path):
    """The optimiser's state is SGD's momentum or AdamW's moments: a run continued with the other
    one would load state that does not fit; it stops, naming the checkpoint and both settings."""
    def trainer(optimizer: str, epochs: str):
        cfg = load_config(None, tiny_run(tiny_dataset, tmp_path, "TRAIN.EPOCHS", epochs, "TRAIN.STAGE", "warmup",
                                         "TRAIN.EVAL_PERIOD", "0", "TRAIN.OPTIMIZER", optimizer))
        return trainer_module.Trainer(cfg, DistContext(0, 1, 0, torch.device("cpu")))

    trainer("sgd", "1").run()
    last = tmp_path / "checkpoints" / "warmup-last.pt"
    with pytest.raises(ConfigError) as err:
        trainer("adamw", "2")
    assert str(err.value) == (f"{last} continues a run trained with TRAIN.OPTIMIZER sgd, and this one has adamw: "
                              "set TRAIN.OPTIMIZER sgd, or TRAIN.AUTO_RESUME False to start over")
    trainer("sgd", "2").run()  # the same optimiser continues it
    assert torch.load(last, weights_only=True)["epoch"] == 2


def test_nan_loss_stops_naming_the_iteration_and_keeps_the_good_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = load_config(None, tiny_run(tiny_dataset, out, "TRAIN.EPOCHS", "2", "TRAIN.LOG_PERIOD", "3"))
    trainer_module.Trainer(cfg, DistContext(0, 1, 0, torch.device("cpu"))).run()
    good = torch.load(out / "checkpoints" / "warmup-last.pt", weights_only=True)
    assert good["epoch"] == 2

    calls = {"n": 0}
    real_loss = S2DNet.loss

    def poisoned(*args, **kwargs):
        losses = real_loss(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(S2DNet, "loss", poisoned)
    cfg = load_config(None, tiny_run(tiny_dataset, out, "TRAIN.EPOCHS", "3", "TRAIN.LOG_PERIOD", "3"))
    with pytest.raises(trainer_module.NonFiniteLossError, match="epoch 3, iteration 1"):
        trainer_module.Trainer(cfg, DistContext(0, 1, 0, torch.device("cpu"))).run()
    kept = torch.load(out / "checkpoints" / "warmup-last.pt", weights_only=True)
    assert kept["epoch"] == 2
    for key in good["model"]:
        assert torch.equal(good["model"][key], kept["model"][key])


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": _Payload(marker)}, f)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint({"a": torch.ones(2)}, path)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"a": torch.zeros(2)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary left behind


def test_linked_checkpoint_keeps_its_state_when_last_is_saved_again(tmp_path, monkeypatch):
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    save_checkpoint({"a": torch.ones(2)}, last)
    link_checkpoint(last, best)
    assert best.stat().st_ino == last.stat().st_ino  # one file on disk, two names
    save_checkpoint({"a": torch.zeros(2)}, last)
    assert torch.equal(load_checkpoint(best)["a"], torch.ones(2))
    assert torch.equal(load_checkpoint(last)["a"], torch.zeros(2))

    def no_hard_links(*args, **kwargs):
        raise OSError("hard links not supported")

    monkeypatch.setattr(os, "link", no_hard_links)
    link_checkpoint(last, best)  # falls back to a copy, replacing the old best whole
    assert best.stat().st_ino != last.stat().st_ino
    assert torch.equal(load_checkpoint(best)["a"], torch.zeros(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]  # no temporary left
