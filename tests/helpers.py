"""Helpers the test modules share (fixtures live in conftest.py)."""

import subprocess
import time


def tiny_run(root, output_dir, *extra) -> list[str]:
    """KEY VALUE overrides for a seconds-long S2DNet run on `tiny_dataset`."""
    return [
        "DATA.DATASET", "synthetic", "DATA.ROOT", str(root), "DATA.NUM_WORKERS", "0",
        "DATA.NUM_CANDIDATES", "8", "DATA.SCALE_SIZE", "64", "DATA.CROP_SIZE", "64",
        "SNET.ARCH", "resnet18", "SNET.NUM_FRAMES", "4", "SNET.INPUT_SIZE", "32",
        "DNET.ARCH", "resnet18", "DNET.NUM_FRAMES", "4", "DNET.INPUT_SIZE", "32",
        "S2D.TOPK", "3", "S2D.THETA_CHANNELS", "16", "S2D.EMBED_DIM", "8", "S2D.CONTEXT_DIM", "16",
        "TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "6", "TRAIN.EPOCHS", "1", "TRAIN.LOG_PERIOD", "1",
        "OUTPUT_DIR", str(output_dir), *extra,
    ]


def signal_after_first_epoch(command, env, log, signum) -> tuple[int, str]:
    """Start a training run, send `signum` once its log shows the first epoch line (or after 300
    s), and return its exit status and output."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and "epoch 1/" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.1)
    proc.send_signal(signum)
    output, _ = proc.communicate(timeout=300)
    return proc.returncode, output
