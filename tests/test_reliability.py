"""What a user meets outside the happy path: several processes, checkpoints used on their own,
interrupted runs, lists and files that lie, values that do not fit. Each test is one of the
failures found by trying the package as a new user would."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from s2d_fast.checkpoint import CheckpointError, load_checkpoint
from s2d_fast.cli import main
from s2d_fast.config import ConfigError, load_config

from helpers import signal_after_first_epoch, tiny_run

REPO = Path(__file__).resolve().parents[1]


def run(*args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """A one-epoch warmup run of the tiny recipe: its output folder."""
    out = tmp_path_factory.mktemp("trained") / "run"
    result = run("train", "--stage", "warmup", *tiny_run(tiny_dataset, out))
    assert result.exit_code == 0, result.output
    return out


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# --- 1. every launch path reports once ---------------------------------------------------------

def test_spawned_processes_on_the_cpu_report_the_metrics_once(tiny_dataset, trained, tmp_path):
    """`NUM_GPUS 2` spawns two processes (here on the CPU, gloo): the parent prints the metrics
    once and writes the JSON, for the paper's EVALUATE form and for `eval`."""
    spawn = ("NUM_GPUS", "2", "DIST.DEVICE", "cpu")
    ckpt = trained / "checkpoints" / "warmup-last.pt"
    result = run("train", *tiny_run(tiny_dataset, trained, *spawn, "EVALUATE", "True", "TRAIN.RESUME", ckpt))
    assert result.exit_code == 0, result.output
    assert result.output.count("top1 ") == 1 and "(12 videos)" in result.output
    js = tmp_path / "m.json"
    result = run("eval", "--json", js, *tiny_run(tiny_dataset, trained, *spawn))
    assert result.exit_code == 0, result.output
    assert result.output.count("top1 ") == 1 and json.loads(js.read_text())["num_videos"] == 12
    assert json.loads(js.read_text())["device"].endswith("x2")


def test_spawned_user_error_is_one_line(tiny_dataset, tmp_path):
    result = run("train", *tiny_run(tiny_dataset, tmp_path / "none", "NUM_GPUS", "2", "DIST.DEVICE", "cpu",
                                    "TRAIN.STAGE", "sampling"))
    assert result.exit_code == 1 and "starts from a warmup checkpoint" in result.output
    assert "Traceback" not in result.output


def test_torchrun_eval_prints_once_and_writes_the_json(tiny_dataset, trained, tmp_path):
    js = tmp_path / "m.json"
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run([str(torchrun), "--nproc_per_node", "2", "-m", "s2d_fast", "eval", "--json", str(js),
                           *tiny_run(tiny_dataset, trained)], capture_output=True, text=True, env=_env(), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("top1 ") == 1 and json.loads(js.read_text())["num_videos"] == 12


# --- 4. evaluation accounts for every row ------------------------------------------------------

def test_evaluation_that_reads_no_video_fails_in_one_line(tiny_dataset, trained, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    shutil.rmtree(data / "videos")  # a DATA.ROOT that holds the lists but not the videos
    result = run("eval", *tiny_run(data, trained))
    assert result.exit_code == 1 and "none of the 12 videos of the validation list could be read" in result.output
    assert "check DATA.ROOT" in result.output
    assert result.output.count("unreadable sample (") == 5 and "more unreadable samples are not logged" in result.output


def test_malformed_rows_stay_in_the_denominator_and_the_json(tiny_dataset, trained, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    rows = (data / "val.txt").read_text().splitlines()
    rows[3] = rows[3].rsplit(" ", 2)[0] + " many 2"  # a frame count that is not a number
    (data / "val.txt").write_text("\n".join(rows) + "\n")
    js, preds = tmp_path / "m.json", tmp_path / "p.jsonl"
    result = run("eval", "--json", js, *tiny_run(data, trained, "TEST.PREDICTIONS", preds))
    assert result.exit_code == 0, result.output
    metrics = json.loads(js.read_text())
    assert metrics["num_videos"] == 12 and metrics["rejected"] == 1
    assert metrics["rejected_rows"][0]["where"] == f"{data / 'val.txt'}:4"
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(lines) == 12 and lines[-1]["row"].endswith("val.txt:4") and "rejected" in lines[-1]
    scored = [line for line in lines if "top" in line]
    hits = sum(line["top"][0][0] == line["label"] for line in scored)
    assert metrics["top1"] == pytest.approx(100 * hits / 12)
    assert "1 list rows were malformed" in result.output


def test_a_label_beyond_the_classes_stops_training(tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    rows = (data / "train.txt").read_text().splitlines()
    rows[0] = rows[0].rsplit(" ", 1)[0] + " 12"
    (data / "train.txt").write_text("\n".join(rows) + "\n")
    result = run("train", *tiny_run(data, tmp_path / "run"))
    assert result.exit_code == 1 and "train.txt:1: label 12 is not below the 12 classes" in result.output


def test_unreadable_videos_are_named_not_faked_in_the_predictions(tiny_dataset, trained, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    first = (data / "val.txt").read_text().split()[0]
    (data / first).write_bytes(b"junk")
    preds = tmp_path / "p.jsonl"
    assert run("eval", *tiny_run(data, trained, "TEST.PREDICTIONS", preds)).exit_code == 0
    line = json.loads(preds.read_text().splitlines()[0])
    assert line["top"] == [] and "cannot decode" in line["unreadable"]


# --- 5. a checkpoint carries its model -------------------------------------------------------

@pytest.fixture(scope="module")
def other_model(tiny_dataset, tmp_path_factory):
    """A run whose model is not the defaults' (mobilenetv2 SNet, 3 detail frames)."""
    out = tmp_path_factory.mktemp("other") / "run"
    result = run("train", *tiny_run(tiny_dataset, out, "SNET.ARCH", "mobilenetv2", "DNET.NUM_FRAMES", "3"))
    assert result.exit_code == 0, result.output
    return out


def test_predict_and_eval_with_only_a_checkpoint_use_its_config(tiny_dataset, other_model, tmp_path):
    ckpt = other_model / "checkpoints" / "warmup-last.pt"
    video = tiny_dataset / (tiny_dataset / "val.txt").read_text().split()[0]
    result = run("predict", video, "--checkpoint", ckpt)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == str(video) and "red-" in result.output  # class names from the checkpoint
    result = run("eval", "--checkpoint", ckpt, "DATA.ROOT", tiny_dataset, "DATA.NUM_WORKERS", "0")
    assert result.exit_code == 0, result.output
    assert "(12 videos) of " + str(ckpt) in result.output


def test_a_checkpoint_that_does_not_fit_the_config_names_the_keys(tiny_dataset, other_model):
    ckpt = other_model / "checkpoints" / "warmup-last.pt"
    result = run("eval", "--checkpoint", ckpt, "--config", REPO / "configs/synthetic/train_warmup.yaml",
                 *tiny_run(tiny_dataset, other_model, "SNET.ARCH", "resnet18"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "does not fit the model this config builds" in result.output
    assert "SNET.ARCH 'mobilenetv2' (checkpoint) vs 'resnet18'" in result.output
    assert "DNET.NUM_FRAMES 3 (checkpoint) vs 4" in result.output


def test_an_exported_safetensors_file_evaluates(tiny_dataset, trained, tmp_path):
    st = tmp_path / "w.safetensors"
    assert run("export", "--checkpoint", trained / "checkpoints" / "warmup-last.pt", "--out", st).exit_code == 0
    state = load_checkpoint(st)
    assert state["num_classes"] == 12 and state["config"] and state["class_names"][0] == "red-rows"
    result = run("eval", "--checkpoint", st, "DATA.ROOT", tiny_dataset, "DATA.NUM_WORKERS", "0")
    assert result.exit_code == 0, result.output
    assert "(12 videos)" in result.output


def test_files_that_are_not_checkpoints_say_so_and_never_suggest_unsafe_loading(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("these are notes\n")
    with pytest.raises(CheckpointError, match="not a checkpoint written by torch.save"):
        load_checkpoint(text)
    result = run("eval", "--checkpoint", text)
    assert result.exit_code == 1 and "weights_only" not in result.output and "Traceback" not in result.output
    tsm = tmp_path / "tsm.pth"
    torch.save({"state_dict": {"module.base_model.conv1.weight": torch.zeros(1)}}, tsm)
    result = run("eval", "--checkpoint", tsm, "--config", REPO / "configs/synthetic/train_warmup.yaml")
    assert result.exit_code == 1 and "not an s2d-fast checkpoint" in result.output


# --- 6, 7. reruns and interrupts -------------------------------------------------------------

def test_rerunning_the_sampling_command_continues_its_own_checkpoint(tiny_dataset, trained, tmp_path):
    out = tmp_path / "run"
    warm = trained / "checkpoints" / "warmup-last.pt"
    first = run("train", *tiny_run(tiny_dataset, out, "TRAIN.STAGE", "sampling", "TRAIN.RESUME", warm))
    assert first.exit_code == 0, first.output
    again = run("train", *tiny_run(tiny_dataset, out, "TRAIN.STAGE", "sampling", "TRAIN.RESUME", warm,
                                   "TRAIN.EPOCHS", "2"))
    assert again.exit_code == 0, again.output
    assert torch.load(out / "checkpoints" / "sampling-last.pt", weights_only=True)["epoch"] == 2
    log = (out / "log_sampling.txt").read_text()
    assert "continuing" in log and "epochs 2-2" in log  # from its own epoch 1, not the warmup again
    done = run("train", *tiny_run(tiny_dataset, out, "TRAIN.STAGE", "sampling", "TRAIN.EPOCHS", "2"))
    assert done.exit_code == 0 and "trained already: 2 epochs" in done.output and "epochs 3-2" not in done.output


def test_sigint_checkpoints_says_how_to_resume_and_exits_130(tiny_dataset, trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained / "checkpoints", out / "checkpoints")
    command = [sys.executable, "-m", "s2d_fast", "train",
               *tiny_run(tiny_dataset, out, "TRAIN.STAGE", "sampling", "TRAIN.EPOCHS", "50")]
    returncode, output = signal_after_first_epoch(command, _env(), out / "log_sampling.txt", signal.SIGINT)
    assert returncode == 130, output
    assert "SIGINT received" in output and "run the same command again to continue" in output
    assert "s of training" not in output
    assert torch.load(out / "checkpoints" / "sampling-last.pt", weights_only=True)["epoch"] < 50


def test_a_second_signal_during_the_write_waits_for_it(tiny_dataset, tmp_path, monkeypatch):
    """Two SIGTERMs while the checkpoint is written: the write completes (the file loads), then
    the run stops with that checkpoint; a second signal outside a write stops at once."""
    from s2d_fast.engine import trainer as trainer_module
    from s2d_fast.engine.distributed import DistContext

    real_save = trainer_module.save_checkpoint
    signals = {"sent": 0}

    def save_while_signalled(state, path):
        if signals["sent"] == 0:
            signals["sent"] = 2
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        return real_save(state, path)

    monkeypatch.setattr(trainer_module, "save_checkpoint", save_while_signalled)
    cfg = load_config(None, tiny_run(tiny_dataset, tmp_path / "run", "TRAIN.EPOCHS", "3", "TRAIN.CHECKPOINT_ITERS", "2"))
    result = trainer_module.Trainer(cfg, DistContext(0, 1, 0, torch.device("cpu"))).run()
    assert result["stopped"] and result["signal"] == signal.SIGTERM
    state = torch.load(tmp_path / "run" / "checkpoints" / "warmup-last.pt", weights_only=True)
    assert (state["epoch"], state["iteration"]) == (result["epoch"], result["iteration"])

    stop = trainer_module.StopRequest()
    with stop:
        stop._handle(signal.SIGINT, None)
        with pytest.raises(trainer_module.RunInterrupted) as err:
            stop._handle(signal.SIGINT, None)
    assert err.value.exit_code == 130


def test_a_stop_before_training_began_stops_after_one_step(tiny_dataset, tmp_path):
    """`bench proof`'s worker holds a StopRequest while it sets a run up; a signal then is the
    run's own: one step, a checkpoint, a stopped result (it used to be ignored)."""
    from s2d_fast.engine import trainer as trainer_module
    from s2d_fast.engine.distributed import DistContext

    cfg = load_config(None, tiny_run(tiny_dataset, tmp_path / "run", "TRAIN.EPOCHS", "3"))
    with trainer_module.StopRequest():
        os.kill(os.getpid(), signal.SIGTERM)
        result = trainer_module.Trainer(cfg, DistContext(0, 1, 0, torch.device("cpu"))).run()
    assert result["stopped"] and result["signal"] == signal.SIGTERM
    assert (result["epoch"], result["iteration"]) == (0, 1)
    state = torch.load(tmp_path / "run" / "checkpoints" / "warmup-last.pt", weights_only=True)
    assert (state["epoch"], state["iteration"]) == (0, 1)


# --- 8, 9. values and inputs that used to give tracebacks ------------------------------------

def test_yaml_reads_exponent_rates_as_floats(tmp_path):
    path = tmp_path / "lr.yaml"
    path.write_text("TRAIN:\n  BASE_LR: 1e-5\n  WEIGHT_DECAY: 5e-4\n")
    cfg = load_config(path)
    assert cfg.TRAIN.BASE_LR == 1e-5 and cfg.TRAIN.WEIGHT_DECAY == 5e-4


@pytest.mark.parametrize("pairs, message", [
    (["DATA.MEAN", "[0.5,0.5]"], "DATA.MEAN needs three numbers"),
    (["TRAIN.BATCH_SIZE", "0"], "TRAIN.BATCH_SIZE must be at least 1; got 0"),
    (["TRAIN.BATCH_SIZE", "-4"], "TRAIN.BATCH_SIZE must be at least 1; got -4"),
    (["DATA.STD", "[0.2,0.0,0.2]"], "DATA.STD must be positive"),
    (["DNET.TEMPORAL_POOL", "True", "DNET.NUM_FRAMES", "3"], "NUM_FRAMES must be even"),
    (["SNET.ARCH", "resnet9"], "SNET.ARCH must be one of"),
])
def test_bad_values_are_one_line_errors(pairs, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, pairs)
    result = run("flops", *pairs)
    assert result.exit_code == 1 and message.split(";")[0] in result.output and "Traceback" not in result.output


def test_base_must_name_a_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("_BASE_: 5\n")
    with pytest.raises(ConfigError, match="_BASE_ names the YAML file"):
        load_config(path)


def test_bench_kernels_on_cuda_without_cuda_is_one_line():
    if torch.cuda.is_available():
        pytest.skip("CUDA is here")
    result = run("bench", "kernels", "--device", "cuda", "--quick")
    assert result.exit_code == 1 and "CUDA is not available" in result.output and "Traceback" not in result.output


def test_error_policy_in_dataloader_workers_reads_as_without_them(tiny_dataset, trained, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    first = (data / "val.txt").read_text().split()[0]
    (data / first).unlink()
    result = run("eval", *tiny_run(data, trained, "DATA.NUM_WORKERS", "1", "DATA.BACKEND", "pyav",
                                   "DATA.ON_BAD_SAMPLE", "error"))
    assert result.exit_code == 1 and f"{first}: no such file" in result.output
    assert "DataLoader worker" not in result.output and "Traceback" not in result.output


@pytest.fixture(scope="module")
def audio_only(tmp_path_factory):
    import av
    import numpy as np

    folder = tmp_path_factory.mktemp("audio")
    path = folder / "sound.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_a_file_without_video_is_named_by_prepare_and_predict(audio_only, trained, tmp_path):
    from s2d_fast.data import commands as C

    result = CliRunner().invoke(C.prepare_frames, [str(audio_only.parent), str(tmp_path / "out"), "--workers", "1"])
    assert result.exit_code == 1 and "sound.mp4: no video stream" in result.output
    ann = tmp_path / "k.csv"
    ann.write_text("label,youtube_id,time_start,time_end,split\nsinging,abc,0,10,train\n")
    (tmp_path / "root" / "singing").mkdir(parents=True)
    shutil.copy(audio_only, tmp_path / "root" / "singing" / "abc_000000_000010.mp4")
    result = CliRunner().invoke(C.prepare_lists, ["kinetics", "--root", str(tmp_path / "root"), "--train", str(ann),
                                                  "--val", str(ann)])
    assert result.exit_code == 0, result.output
    assert "skipped 2: no frames" in result.output and "singing/abc_000000_000010.mp4: no frames" in result.output
    result = run("predict", audio_only, "--checkpoint", trained / "checkpoints" / "warmup-last.pt")
    assert result.exit_code == 1 and "sound.mp4: no video stream" in result.output and "Traceback" not in result.output


# --- 10. the first command a user types ------------------------------------------------------

def test_no_config_runs_the_built_in_recipe_with_its_synopsis_first(tmp_path, monkeypatch):
    """`s2d-fast train --stage warmup` with no config: the built-in dataset's recipe, whose SNet
    starts from the synopsis network trained alone, trained first when missing (said so);
    `--stage sampling` and `eval` with no config follow it. Sized down here by KEY VALUE pairs."""
    monkeypatch.chdir(tmp_path)
    small = ["DATA.CACHE_DIR", str(tmp_path / "cache"), "SYNTHETIC.NUM_TRAIN", "16", "SYNTHETIC.NUM_VAL", "8",
             "SYNTHETIC.FRAME_SIZE", "64", "SYNTHETIC.NUM_FRAMES", "16", "DATA.SCALE_SIZE", "64",
             "DATA.CROP_SIZE", "64", "DNET.INPUT_SIZE", "48", "TRAIN.EPOCHS", "1", "DATA.NUM_WORKERS", "0"]
    warm = run("train", "--stage", "warmup", *small)
    assert warm.exit_code == 0, warm.output
    assert "no config file: the built-in dataset's recipe" in warm.output and "train_warmup.yaml" in warm.output
    assert "training the synopsis network first" in warm.output
    assert (tmp_path / "runs/synthetic-synopsis/checkpoints/warmup-last.pt").is_file()
    assert (tmp_path / "runs/synthetic/checkpoints/warmup-last.pt").is_file()
    samp = run("train", "--stage", "sampling", *small)
    assert samp.exit_code == 0, samp.output
    assert (tmp_path / "runs/synthetic/checkpoints/sampling-last.pt").is_file()
    ev = run("eval", *small)
    assert ev.exit_code == 0, ev.output
    assert "runs/synthetic/checkpoints/sampling-best.pt" in ev.output


# --- 11. smaller things ----------------------------------------------------------------------

def test_predict_reports_every_readable_video_when_one_is_broken(tiny_dataset, trained, tmp_path):
    videos = [tiny_dataset / line.split()[0] for line in (tiny_dataset / "val.txt").read_text().splitlines()[:2]]
    broken = tmp_path / "broken.webm"
    broken.write_bytes(b"junk")
    result = run("predict", videos[0], broken, videos[1], "--checkpoint", trained / "checkpoints" / "warmup-last.pt")
    assert result.exit_code == 1
    assert str(videos[0]) in result.output and str(videos[1]) in result.output
    assert "broken.webm: cannot decode" in result.output


def test_an_option_and_a_pair_for_the_same_key_must_agree(tiny_dataset, tmp_path):
    result = run("train", "--output", tmp_path / "a", *tiny_run(tiny_dataset, tmp_path / "b"))
    assert result.exit_code == 2 and "OUTPUT_DIR is given twice" in result.output


def test_kinetics_class_folders_with_underscores_are_found(tmp_path):
    from s2d_fast.data import commands as C
    from s2d_fast.data.synthetic import render_video

    from test_predict import write_mp4

    video, _, _ = render_video(0, "val", 0, frame_size=64, num_frames=8)
    (tmp_path / "playing_guitar").mkdir()
    write_mp4(tmp_path / "playing_guitar" / "abc_000001_000011.mp4", video)
    ann = tmp_path / "k.csv"
    ann.write_text("label,youtube_id,time_start,time_end,split\nplaying guitar,abc,1,11,train\n")
    result = CliRunner().invoke(C.prepare_lists, ["kinetics", "--root", str(tmp_path), "--train", str(ann), "--val", str(ann)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "train.txt").read_text() == "playing_guitar/abc_000001_000011.mp4 8 0\n"


def test_the_picture_says_one_window_size_and_both_zooms(monkeypatch):
    from s2d_fast.engine import visualize

    t, s = 4, 16
    frames = torch.zeros(t, 3, 64, 64, dtype=torch.uint8)
    out = {"detail": torch.zeros(1, 3, s, s), "t_positions": torch.tensor([1.0]), "t_center": torch.tensor(1.0),
           "t_stride": torch.tensor(1.0), "centers": torch.tensor([[31.5, 31.5]]), "strides": torch.tensor([[2.0, 1.0]]),
           "log_prob": torch.log_softmax(torch.zeros(3), 0), "z_s": torch.zeros(3), "mask": torch.ones(3)}
    texts = []
    titled = visualize._titled

    def capture(lines, body):
        texts.extend(lines)
        return titled(lines, body)

    monkeypatch.setattr(visualize, "_titled", capture)
    visualize.sampling_figure(frames, t, out, mean=[0.5] * 3, std=[0.5] * 3)
    assert any("window 32x16 px of the frame, zoom 2.00x across, 4.00x down" in line for line in texts)
    assert any(f"what DNet saw, {s}x{s} px" in line for line in texts)
