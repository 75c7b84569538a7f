import os

import pytest
import torch

# Triton reads this when `triton.jit` defines a kernel, i.e. at each op's first Triton launch.
# Without a GPU the kernels run on CPU tensors through Triton's interpreter; with one they are
# compiled for it (tests/test_cuda.py), and the CPU-tensor Triton cases are skipped.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# pytest-xdist workers share the cores: each takes its share of threads, and so do the processes
# its tests start, instead of every one spinning a thread per core.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    torch.set_num_threads(_threads)
    os.environ["OMP_NUM_THREADS"] = str(_threads)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return
    skip = pytest.mark.skip(reason="Triton runs CPU tensors only in its interpreter (TRITON_INTERPRET=1); "
                                   "tests/test_cuda.py runs the kernels on this GPU")
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("backend") == "triton" or params.get("use_triton") is True:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A small built-in dataset (24 training, 12 validation videos of 16 frames at 64 px), once."""
    from s2d_fast.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("synthetic") / "data"
    return generate_synthetic(root, 24, 12, seed=3, fmt="webm", progress=False, workers=1, frame_size=64, num_frames=16)


@pytest.fixture(scope="session")
def micro_dataset(tmp_path_factory):
    """The same kind, 8 training and 6 validation videos: for runs in emulated bf16 or fp16,
    ten times slower per video than float32 on a CPU without native bf16."""
    from s2d_fast.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("micro") / "data"
    return generate_synthetic(root, 8, 6, seed=3, fmt="webm", progress=False, workers=1, frame_size=64, num_frames=16)
