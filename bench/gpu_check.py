"""The first thing to run on a GPU machine: every GPU-only path tested and measured, in one
command of a few minutes (`s2d-fast bench gpu`, or `python -m s2d_fast.bench.gpu_check`).

Sections, each independent (one failing does not stop the others), each timed:
- `tests`: `tests/test_cuda.py` in a process of its own with TRITON_INTERPRET=0: the kernels
  compiled for this GPU against the references (shift at TSM-ResNet-50's shapes, bf16 and fp32,
  NCHW and channels_last, odd shapes, T = 1; the 7-tap gather; 16 detail frames of 112 from
  150 candidates), the model compiled on CUDA against eager, DALI's GPU decode against its CPU
  decode, NCCL in one process;
- `kernels`: `bench kernels` on CUDA: GB/s of each op and its share of a same-size copy;
- `eval`: `bench eval` compiled (bf16, channels_last) for S2DNet and TSM-ResNet-50 on 8 and 16
  frames, videos/s;
- `decode`: `bench data` with DALI on the GPU (NVDEC, `mixed`) against the PyAV loader on the
  built-in dataset, videos/s.
It writes `gpu_check.json` and `gpu_check.md` (tables ready for bench/RESULTS.md, headed by the
GPU's name, the driver and the date) into `--out`.

`--dry-run` (what CI runs on the CPU) builds every case of every section without a GPU: it
collects the CUDA tests, generates the kernel cases at small size, builds the benchmarked
models and the decode config, and reports each section as skipped with the reason.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import click
import torch

REPO = Path(__file__).resolve().parents[1]
CUDA_TESTS = REPO / "tests" / "test_cuda.py"
SECTIONS = ("tests", "kernels", "eval", "decode")
EVAL_MODELS = ("s2dnet", "tsm8", "tsm16")


def _driver() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict:
    info = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "torch": torch.__version__, "python": platform.python_version(), "cuda": torch.version.cuda}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), driver=_driver(), gpus=torch.cuda.device_count())
    else:
        from s2d_fast.engine.runtime import cpu_model

        info.update(gpu=None, cpu=cpu_model())
    return info


# --- the sections: each returns its result (a dict) or raises; `dry` builds without running ---

def _tests(dry: bool, out: Path) -> dict:
    if not CUDA_TESTS.is_file():
        raise FileNotFoundError(f"{CUDA_TESTS} is not in this install: run the check from a clone of the repository")
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    # One process (-n 0): xdist's workers would share the one GPU and its DDP test's port.
    args = [sys.executable, "-m", "pytest", str(CUDA_TESTS), "-q", "-rs", "-n", "0", "-p", "no:cacheprovider"]
    if dry:
        args.append("--collect-only")
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    (out / "gpu_check_tests.txt").write_text(done.stdout + done.stderr)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else "(no output)"
    if done.returncode not in (0, 5) or (dry and "error" in summary):
        raise RuntimeError(f"pytest exited {done.returncode}: {summary}")
    return {"summary": summary, "skipped": [line for line in lines if line.startswith("SKIPPED")][:20]}


def _kernels(dry: bool, out: Path) -> dict:
    from .kernels import _gather_cases, _shift_cases, bench_kernels

    if dry:
        cases = list(_shift_cases(torch.device("cpu"), quick=True)) + list(_gather_cases(torch.device("cpu"), quick=True))
        return {"cases": [f"{op} {case} {direction}" for op, case, direction, *_ in cases]}
    rows = bench_kernels(device="cuda", repeats=10, json_path=str(out / "gpu_check_kernels.json"))
    return {"rows": rows}


def _eval_config():
    from s2d_fast.config import load_config

    return load_config(None, ["NUM_GPUS", "1"])


def _eval(dry: bool, out: Path) -> dict:
    from .eval import _build, bench_eval, check_args

    cfg = _eval_config()
    modes = ["compiled-bf16-cl"]
    check_args(cfg, 8, 2, 3, modes, EVAL_MODELS, "random")
    if dry:
        for model in EVAL_MODELS:
            _build(cfg, model, 400, torch.device("cpu"), channels_last=True)
        return {"models": list(EVAL_MODELS), "modes": modes}
    result = bench_eval(cfg, batch_size=8, batches=2, repeats=3, modes=modes, models=EVAL_MODELS, device="cuda",
                        inputs="random", json_path=str(out / "gpu_check_eval.json"))
    return {"rows": [{"name": r["name"], "gflops": r["gflops"], "videos_per_s": r["videos_per_s"][modes[0]]}
                     for r in result["rows"]]}


def _decode_config(cache: Path):
    from s2d_fast.config import load_config

    return load_config(None, [
        "NUM_GPUS", "1", "DATA.CACHE_DIR", str(cache), "SYNTHETIC.FORMAT", "webm", "SYNTHETIC.NUM_TRAIN", "64",
        "SYNTHETIC.FRAME_SIZE", "256", "SYNTHETIC.NUM_FRAMES", "75", "DATA.NUM_CANDIDATES", "32",
        "DATA.SCALE_SIZE", "256", "DATA.CROP_SIZE", "224", "DATA.NUM_WORKERS", "2", "TRAIN.BATCH_SIZE", "8",
        "SNET.NUM_FRAMES", "8", "DNET.NUM_FRAMES", "8"])


def _decode(dry: bool, out: Path) -> dict:
    cfg = _decode_config(out / "cache")
    if dry:
        from s2d_fast.data.loader import choose_backend

        return {"backend": choose_backend(cfg), "batch": cfg.TRAIN.BATCH_SIZE}
    from .data import bench_data

    result = bench_data(cfg, num_batches=6, repeats=3, json_path=str(out / "gpu_check_decode.json"))
    return {"rows": result["rows"]}


_RUNNERS = {"tests": _tests, "kernels": _kernels, "eval": _eval, "decode": _decode}


def run_check(out: str | Path, dry_run: bool = False, sections=SECTIONS) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    has_cuda = torch.cuda.is_available()
    report = {"machine": machine(), "dry_run": dry_run, "sections": {}}
    for name in sections:
        start = time.perf_counter()
        entry: dict = {}
        try:
            if not has_cuda and not dry_run:
                raise RuntimeError("needs CUDA, which this machine does not have (use --dry-run on a CPU)")
            entry["result"] = _RUNNERS[name](dry_run, out)
            entry["status"] = "built (dry run): needs CUDA to run" if dry_run else "ok"
        except Exception as err:  # a section's failure is reported, and the next section runs
            entry["status"] = "failed"
            entry["error"] = f"{type(err).__name__}: {err}"
            entry["traceback"] = traceback.format_exc(limit=6)
        entry["seconds"] = round(time.perf_counter() - start, 1)
        report["sections"][name] = entry
        print(f"[gpu check] {name}: {entry['status']} ({entry['seconds']:.0f} s)"
              + (f": {entry['error']}" if "error" in entry else ""), file=sys.stderr, flush=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    m = report["machine"]
    where = f"{m['gpu']}, driver {m['driver']}" if m.get("gpu") else f"no GPU ({m.get('cpu')})"
    lines = [f"## GPU check (`s2d-fast bench gpu{' --dry-run' if report['dry_run'] else ''}`), {m['date']}", "",
             f"{where}; torch {m['torch']}, CUDA {m['cuda']}, Triton {m['triton']}", "",
             "| section | status | seconds | result |", "|---|---|---:|---|"]
    for name, entry in report["sections"].items():
        result = entry.get("error") or _brief(name, entry.get("result", {}))
        lines.append(f"| {name} | {entry['status']} | {entry['seconds']:.0f} | {result} |")
    for name, entry in report["sections"].items():
        rows = entry.get("result", {}).get("rows")
        if name == "kernels" and rows:
            lines += ["", "| op | case | direction | impl | ms | GB/s | of copy |", "|---|---|---|---|---:|---:|---:|"]
            lines += [f"| {r['op']} | {r['case']} | {r['direction']} | {r['impl']} | {r['ms']:.3f} | "
                      f"{r.get('gb_per_s', 0):.0f} | {r.get('of_copy_bw', 0):.2f} |" for r in rows]
        if name == "eval" and rows:
            lines += ["", "| model | GFLOPs/video | videos/s (compiled bf16 channels_last) |", "|---|---:|---:|"]
            lines += [f"| {r['name']} | {r['gflops']:.2f} | {r['videos_per_s']:.1f} |" for r in rows]
        if name == "decode" and rows:
            lines += ["", "| loader | videos/s |", "|---|---:|"]
            lines += [f"| {loader} | {row['videos_per_s']:.1f} |" for loader, row in rows.items()]
    return "\n".join(lines) + "\n"


def _brief(name: str, result: dict) -> str:
    if name == "tests":
        return result.get("summary", "")
    if "cases" in result:
        return f"{len(result['cases'])} cases built"
    if "models" in result:
        return f"built {', '.join(result['models'])}"
    if "backend" in result:
        return f"loader config built (backend {result['backend']})"
    return f"{len(result.get('rows', []))} rows"


@click.command()
@click.option("--out", default="gpu_check", show_default=True, type=click.Path(file_okay=False),
              help="Folder for gpu_check.json, gpu_check.md and each section's own output.")
@click.option("--dry-run", is_flag=True, help="Build every case without a GPU (what CI runs).")
@click.option("--sections", default=",".join(SECTIONS), show_default=True, help="Comma-separated sections to run.")
def bench_gpu_command(out, dry_run, sections):
    """Test and measure every GPU path (kernels, compiled model, DALI decode, NCCL) in minutes."""
    chosen = [s.strip() for s in sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown or not chosen:
        raise click.UsageError(f"unknown sections {unknown}: sections are {', '.join(SECTIONS)}")
    report = run_check(out, dry_run=dry_run, sections=chosen)
    click.echo(markdown(report))
    failed = [name for name, entry in report["sections"].items() if entry["status"] == "failed"]
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    bench_gpu_command()
