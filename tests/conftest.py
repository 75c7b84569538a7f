import os

# Triton reads this when `triton.jit` defines a kernel, i.e. at each op's first Triton launch:
# set before any test runs, so that the kernels run on CPU tensors through the interpreter on
# machines without a GPU.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A small built-in dataset (24 training, 12 validation videos of 16 frames at 64 px), once."""
    from s2d_fast.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("synthetic") / "data"
    return generate_synthetic(root, 24, 12, seed=3, fmt="webm", progress=False, workers=1, frame_size=64, num_frames=16)
