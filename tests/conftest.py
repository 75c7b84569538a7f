import os

# Triton reads this when `triton.jit` decorates a kernel, i.e. at import of s2d_fast.kernels:
# it must be set before any test module imports the package, so that the kernels run on CPU
# tensors through the interpreter on machines without a GPU.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A small built-in dataset (24 training, 12 validation videos of 16 frames at 64 px), once."""
    from s2d_fast.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("synthetic") / "data"
    return generate_synthetic(root, 24, 12, seed=3, fmt="webm", progress=False, workers=1, frame_size=64, num_frames=16)


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
