"""The kernels as a real GPU would run them, read on the CPU: Triton compiles them for sm_90
(H100/H200) and the PTX shows how wide their global loads are. A shift that cannot prove its
source frame constant over a vector falls back to one 2-byte load per element.

The compiling runs in a process of its own with the interpreter off (the suite runs the
kernels interpreted, and Triton reads the switch when it first defines a kernel)."""

import json
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SHIFT_CASES = [(h, w, c, cl, dtype) for h, w, c, cl in [(14, 14, 1024, False), (7, 7, 2048, False),
                                                         (56, 56, 64, True), (28, 28, 512, True)]
               for dtype in ("bf16", "fp32")]


def _compile_all() -> dict:
    """{case: sorted global load instructions}; run with TRITON_INTERPRET=0."""
    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from s2d_fast.kernels.gather_frames import _gather_kernel, block_for
    from s2d_fast.kernels.temporal_shift import BLOCK, _shift_kernel

    def ptx(kernel, signature, constants, values):
        names = list(signature)
        aligned = [names.index(n) for n, t in signature.items() if t.startswith("*")]
        aligned += [names.index(n) for n, v in values.items() if v % 16 == 0]  # as a launch specialises
        attrs = {(i,): [["tt.divisibility", 16]] for i in aligned}
        source = ASTSource(kernel, signature, constants, attrs=attrs)
        return triton.compile(source, target=GPUTarget("cuda", 90, 32)).asm["ptx"]

    out = {}
    shift, _ = _shift_kernel()
    for h, w, c, cl, dtype in SHIFT_CASES:
        fold = c // 8
        signature = {"x_ptr": f"*{dtype}", "out_ptr": f"*{dtype}", "n_segment": "i32", "frame_numel": "i32",
                     "fold_numel": "i32", "C": "constexpr", "FOLD": "constexpr", "CHANNELS_LAST": "constexpr",
                     "REVERSE": "constexpr", "BLOCK": "constexpr"}
        constants = {"C": c if cl else 1, "FOLD": fold if cl else 0, "CHANNELS_LAST": cl, "REVERSE": False,
                     "BLOCK": BLOCK}
        code = ptx(shift, signature, constants, {"n_segment": 8, "frame_numel": c * h * w, "fold_numel": fold * h * w})
        out[str((h, w, c, cl, dtype))] = sorted(set(re.findall(r"ld\.global[.\w]*", code)))
    gather, _ = _gather_kernel()
    plane = 224 * 224
    signature = {"frames_ptr": "*u8", "index_ptr": "*i64", "weight_ptr": "*fp32", "mean_ptr": "*fp32",
                 "std_ptr": "*fp32", "out_ptr": "*fp32", "T": "i32", "K": "i32", "P": "i32", "frame_numel": "i32",
                 "plane": "i32", "scale": "fp32", "stride_b": "i64", "stride_t": "i32",
                 "HAS_WEIGHT": "constexpr", "HAS_NORM": "constexpr", "BLOCK": "constexpr"}
    block = block_for(torch.empty(0, dtype=torch.uint8))
    code = ptx(gather, signature, {"HAS_WEIGHT": True, "HAS_NORM": True, "BLOCK": block},
               {"T": 32, "K": 8, "P": 1, "frame_numel": 3 * plane, "plane": plane, "stride_b": 32 * 3 * plane,
                "stride_t": 3 * plane})
    out["gather u8"] = sorted(set(re.findall(r"ld\.global[.\w]*", code)))
    return out


@pytest.fixture(scope="module")
def loads():
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    done = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env, timeout=300)
    if done.returncode != 0:
        if "ImportError" in done.stderr or "No module named" in done.stderr:
            pytest.skip(f"Triton cannot compile for sm_90 here: {done.stderr.strip().splitlines()[-1]}")
        raise AssertionError(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", SHIFT_CASES, ids=str)
def test_the_shift_loads_16_bytes_at_a_time(loads, case):
    assert loads[str(case)] == ["ld.global.v4.b32"], loads[str(case)]


def test_the_uint8_gather_loads_16_bytes_at_a_time(loads):
    assert "ld.global.v4.b32" in loads["gather u8"], loads["gather u8"]


if __name__ == "__main__":
    print(json.dumps(_compile_all()))
