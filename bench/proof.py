"""The proof: S2DNet against the uniform baseline on the built-in details task, same detail budget.

For each built-in task (`--tasks`, `SYNTHETIC.TASK`: tiles and balls, in OUT/<task>/) and each
seed, the dataset is generated with that seed (`SYNTHETIC.SEED`, also the training seed
`RNG_SEED`), then the recipes in `configs/synthetic/` train and are evaluated on its validation
videos:

- `uniform`: plain TSM on K uniform whole frames (`S2D.DETAIL_SAMPLING False`), trained for as
  many epochs as S2DNet's two stages together;
- `synopsis`: the synopsis network alone, which also starts S2DNet's SNet;
- `s2dnet-warmup`: S2DNet's first stage, the sampler fixed (in the built-in recipe at SNet's
  evidence);
- `s2dnet`: the sampling stage of the built-in recipe, from that warmup;
- `s2dnet-learned`: the sampling stage with f_theta learning where to look (the paper's), and
  `temporal-only` and `spatial-only`, the same with one axis of f_theta switched off, all from
  the same warmup (warmup never trains f_theta, so they share it).

Every recipe has the same DNet backbone, K, detail input size and number of training epochs
(warmup + sampling for the S2DNet rows). The table reports the last epoch's validation top-1 and
mAP (never the best epoch's), GFLOPs per video (fvcore) and training minutes (for a sampling
row, its warmup's minutes included). It also says where the detail frames fell, against where
the generator put the cue (`where_it_looks`): the share of validation videos with a detail frame
on one of the cue's frames (also per true colour group), the share of those frames whose window
holds the cue's centre, and the mean zoom. Each top-1 comes with its standard error (each seed's
validation top-1 a binomial proportion over its videos), and the comparisons that decide the
proof (S2DNet after sampling against its warmup, the uniform baseline and the synopsis network
alone) with the paired standard error of the difference over the same videos. A recipe whose
result is already in the output folder is not trained again, so an interrupted proof continues
where it stopped. `--jobs` runs (default 2) train at once, each in its own process with its
share of the cores, a run after the ones it starts from; each run's training log is in its
folder.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import multiprocessing
import os
import signal
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch

from s2d_fast.checkpoint import checkpoint_path
from s2d_fast.cli_support import PAIRS_SETTINGS, UserErrorCommand
from s2d_fast.config import CHOICES, load_config, num_candidates, packaged_configs
from s2d_fast.data.datasets import resolve_dataset, resolve_num_classes
from s2d_fast.data.frame_indices import clip_indices
from s2d_fast.data.loader import build_loader
from s2d_fast.data.synthetic import group_names, group_of, read_meta, render_video
from s2d_fast.engine.evaluate import load_for_eval
from s2d_fast.engine.metrics import compute_metrics
from s2d_fast.engine.runtime import autocast, training_amp
from s2d_fast.engine.trainer import StopRequest, train
from s2d_fast.models.flops import config_gflops
from s2d_fast.models.sampler import uniform_indices

CONFIG_DIR = packaged_configs() / "synthetic"


@dataclass(frozen=True)
class Recipe:
    name: str
    config: str  # file in configs/synthetic/
    what: str
    start: str | None = None  # the recipe whose checkpoint this one resumes from (TRAIN.RESUME)
    snet_from: str | None = None  # the recipe whose checkpoint starts SNet (SNET.PRETRAINED)

    @property
    def needs(self) -> tuple[str, ...]:
        return tuple(r for r in (self.snet_from, self.start) if r)


RECIPES = (
    Recipe("uniform", "uniform.yaml", "TSM on K uniform whole frames"),
    Recipe("synopsis", "synopsis.yaml", "the synopsis network alone: TSM on SNet's frames"),
    Recipe("s2dnet-warmup", "train_warmup.yaml", "S2DNet warmup (the sampler fixed)", snet_from="synopsis"),
    Recipe("s2dnet", "train_sampling.yaml", "S2DNet, warmup then sampling", start="s2dnet-warmup", snet_from="synopsis"),
    Recipe("s2dnet-learned", "learned_sampler.yaml", "sampling with f_theta learning", start="s2dnet-warmup",
           snet_from="synopsis"),
    Recipe("temporal-only", "temporal_only.yaml", "f_theta learning in time only", start="s2dnet-warmup",
           snet_from="synopsis"),
    Recipe("spatial-only", "spatial_only.yaml", "f_theta learning in space only", start="s2dnet-warmup",
           snet_from="synopsis"),
)
_clock = {"start": time.perf_counter(), "console": None}  # a worker's console is its parent's


def _progress(message: str) -> None:
    minutes = (time.perf_counter() - _clock["start"]) / 60
    print(f"[proof {minutes:6.1f} min] {message}", file=_clock["console"] or sys.stderr, flush=True)


# What the proof sets in every recipe before the caller's pairs: 600 validation videos per seed
# (the recipes' own 200 leave a two-seed mean top-1 a standard error of ~2.5 points; 600 bring it
# to <= 1.5), and no validation while training: `where_it_looks` scores the last checkpoint in
# the same pass that finds where it looked, the one evaluation the table reads.
PROOF_SETTINGS = ("SYNTHETIC.NUM_VAL", "600", "TRAIN.EVAL_PERIOD", "0")


def recipe_config(recipe: Recipe, seed: int, out_dir: Path, overrides: list[str], config_dir: Path = CONFIG_DIR):
    """The config of one recipe and seed: its YAML, then the proof's settings, the seed and the
    output folder, then the caller's KEY VALUE pairs (applied to every recipe alike)."""
    pairs = [*PROOF_SETTINGS, "SYNTHETIC.SEED", str(seed), "RNG_SEED", str(seed),
             "OUTPUT_DIR", str(out_dir / f"seed{seed}" / recipe.name)]
    for key, source in (("TRAIN.RESUME", recipe.start), ("SNET.PRETRAINED", recipe.snet_from)):
        if source is not None:
            pairs += [key, str(out_dir / f"seed{seed}" / source / "checkpoints" / "warmup-last.pt")]
    return load_config(str(config_dir / recipe.config), pairs + list(overrides))


@functools.lru_cache(maxsize=4)
def _validation_cues(seed: int, task: str, size: int, length: int, count: int) -> tuple[tuple[int, dict], ...]:
    """Each validation video's label and cue, rendered once per dataset in a process (a tiles
    video takes ~0.1 s to render, and a proof worker looks at one dataset ten times)."""
    return tuple(render_video(seed, "val", i, task=task, frame_size=size, num_frames=length)[1:] for i in range(count))


def where_it_looks(cfg, checkpoint: str | Path) -> dict:
    """The checkpoint scored on the built-in dataset's validation videos (`top1`, `top5`, `mAP`,
    `num_videos`, as `s2d-fast eval` gives them), and in the same pass where its detail frames
    fall against where the generator put the cue (its frames and boxes are a pure function of
    the seed): `cue_hit` the share of videos with a detail frame on a cue frame (the frame the
    largest temporal weight reads), `cue_in_window` the share of those detail frames whose
    window holds the cue's centre, `zoom` the mean identity stride over the window's stride, and
    the top-1 (percent) of the videos where a detail frame shows the cue and of those where none
    does: the second says what the model can do without the detail. `group_top1` (percent) counts
    a video right when its top class has the right colour group, all a low-resolution synopsis sees:
    where SNet's group is wrong, its saliency is on the wrong object and the comb misses;
    `group_top1_per_group` and `cue_hit_per_group` (percent) the same and the cue hit over each
    true group's videos, in the order of `groups`. A synopsis network can name one group by the
    absence of the others, and then has no evidence of where its cue is: that group's cue hit
    shows it."""
    meta = read_meta(resolve_dataset(cfg).root)
    seed, size, length, task = meta["seed"], meta["frame_size"], meta["num_frames"], meta["task"]
    loader = build_loader(cfg, "val")
    cues = _validation_cues(seed, task, size, length, len(loader.dataset))
    model, _ = load_for_eval(cfg, checkpoint, torch.device("cpu"))
    t, k = num_candidates(cfg), cfg.DNET.NUM_FRAMES
    scale = cfg.DATA.SCALE_SIZE / size  # the evaluation view: resized, then the centre crop
    offset = (cfg.DATA.SCALE_SIZE - cfg.DATA.CROP_SIZE) / 2
    identity = cfg.DATA.CROP_SIZE / cfg.DNET.INPUT_SIZE
    candidate_frames, _ = clip_indices(length, t, 1)  # every validation video has `length` frames
    hits, inside, zooms, scores, labels = [], [], [], [], []
    # The precision the recipe trains in, in which the trainer would have validated it.
    with torch.no_grad(), autocast(torch.device("cpu"), training_amp(cfg, torch.device("cpu"))):
        for batch in loader:
            out = model(batch["frames"], batch["n_valid"])
            positions = out.get("t_positions")
            if positions is None:
                positions = uniform_indices(batch["n_valid"], k).double()
            scores.append(out["log_prob"].float().exp())
            for i, index in enumerate(batch["index"].tolist()):
                label, cue = cues[index]
                if not batch["valid"][i] or int(batch["label"][i]) != label:
                    raise click.ClickException(f"validation video {index} of {resolve_dataset(cfg).root} is not the "
                                               "one the generator renders: generate the dataset again")
                labels.append(label)
                frames = candidate_frames[positions[i].round().long().clamp(0, t - 1).numpy()]
                on = (frames >= cue["start"]) & (frames < cue["start"] + cue["length"])
                hits.append(bool(on.any()))
                if "centers" not in out:
                    continue
                zooms.append(float((identity / out["strides"][i]).mean()))
                for j in np.flatnonzero(on):
                    y, x, side = cue["boxes"][frames[j] - cue["start"]]
                    cue_xy = torch.tensor([x, y], dtype=torch.float64) * scale + side * scale / 2 - 0.5 - offset
                    half = out["strides"][i, j].double() * cfg.DNET.INPUT_SIZE / 2
                    inside.append(bool(((cue_xy - out["centers"][i, j].double()).abs() <= half).all()))
    scores, labels = torch.cat(scores).numpy(), np.array(labels)
    metrics = compute_metrics(scores, labels)
    hits, predicted = np.array(hits), scores.argmax(1)
    correct = predicted == labels
    truth = group_of(labels, task)
    group_right = group_of(predicted, task) == truth
    groups = group_names(task)

    def per_group(values: np.ndarray) -> list[float | None]:
        return [100 * float(values[truth == g].mean()) if (truth == g).any() else None for g in range(len(groups))]

    return {
        "top1": metrics["top1"], "top5": metrics["top5"], "mAP": metrics["mAP"], "num_videos": len(labels),
        "correct": "".join("1" if c else "0" for c in correct),  # per validation video, in list order
        "top1_cue_shown": 100 * float(correct[hits].mean()) if hits.any() else None,
        "top1_cue_missed": 100 * float(correct[~hits].mean()) if (~hits).any() else None,
        "group_top1": 100 * float(np.mean(group_right)),
        "groups": list(groups),
        "group_top1_per_group": per_group(group_right),
        "cue_hit": float(np.mean(hits)),
        "cue_hit_per_group": per_group(hits),
        "cue_in_window": float(np.mean(inside)) if inside else (1.0 if not zooms else 0.0),
        "zoom": float(np.mean(zooms)) if zooms else 1.0,
    }


def run_recipe(recipe: Recipe, seed: int, out_dir: Path, overrides: list[str], done: dict) -> dict:
    """Train and evaluate one recipe for one seed (or read its earlier result)."""
    result_path = _result_path(out_dir, seed, recipe.name)
    if result_path.is_file():
        _progress(f"{out_dir.name} seed {seed}: {recipe.name} done before, reading {result_path}")
        result = json.loads(result_path.read_text())
        if not _looked_at_all(result):
            cfg = recipe_config(recipe, seed, out_dir, overrides)
            result.update(where_it_looks(cfg, _last_checkpoint(cfg)))
            result_path.write_text(json.dumps(result, indent=2) + "\n")
        return result
    cfg = recipe_config(recipe, seed, out_dir, overrides)
    _progress(f"{out_dir.name} seed {seed}: training {recipe.name} ({recipe.config}, {cfg.TRAIN.EPOCHS} epochs)")
    trained = train(cfg).value
    if trained.get("stopped"):
        raise click.ClickException(f"{recipe.name} (seed {seed}) stopped before the end; run the proof again to continue")
    # A row's minutes count every run it stands on; its epochs are the detail network's, and the
    # synopsis network's training before it is counted apart.
    start = done[recipe.start] if recipe.start else None
    base = start or (done[recipe.snet_from] if recipe.snet_from else None)  # a start counts its own base
    minutes = trained["train_seconds"] / 60 + (base["train_minutes"] if base else 0.0)
    epochs = cfg.TRAIN.EPOCHS + (start["epochs"] if start else 0)
    snet_epochs = done[recipe.snet_from]["epochs"] if recipe.snet_from else 0
    result = {
        "recipe": recipe.name, "seed": seed, "config": f"configs/synthetic/{recipe.config}",
        "gflops_per_video": config_gflops(cfg, resolve_num_classes(cfg)[0]),
        "train_minutes": minutes, "epochs": epochs, "snet_pretrain_epochs": snet_epochs,
        **where_it_looks(cfg, trained["checkpoint"]),
    }
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result, indent=2) + "\n")
    _progress(f"{out_dir.name} seed {seed}: {recipe.name} top1 {result['top1']:.2f}  mAP {result['mAP']:.2f}  "
              f"({minutes:.1f} min of training)")
    return result


def _looked_at_all(result: dict) -> bool:
    """Whether a row's result has every figure `where_it_looks` gives now (a row trained by an
    earlier version of the proof is looked at again, not trained again)."""
    return "cue_hit_per_group" in result


def _last_checkpoint(cfg) -> Path:
    return checkpoint_path(cfg.OUTPUT_DIR, cfg.TRAIN.STAGE, "last")


def summarise(results: list[dict], recipes: list[Recipe], seeds: list[int]) -> dict:
    rows = []
    for recipe in recipes:
        mine = [r for r in results if r["recipe"] == recipe.name]
        rows.append({
            "recipe": recipe.name, "what": recipe.what, "config": f"configs/synthetic/{recipe.config}",
            "top1_mean": statistics.fmean(r["top1"] for r in mine),
            "top1_se": top1_standard_error(mine),
            "top1_per_seed": [r["top1"] for r in mine],
            "mAP_mean": statistics.fmean(r["mAP"] for r in mine),
            "gflops_per_video": mine[0]["gflops_per_video"],
            "train_minutes_mean": statistics.fmean(r["train_minutes"] for r in mine),
            "cue_hit_mean": statistics.fmean(r["cue_hit"] for r in mine),
            "cue_in_window_mean": statistics.fmean(r["cue_in_window"] for r in mine),
            "zoom_mean": statistics.fmean(r["zoom"] for r in mine),
            "top1_cue_shown_mean": _mean(r["top1_cue_shown"] for r in mine),
            "top1_cue_missed_mean": _mean(r["top1_cue_missed"] for r in mine),
            "group_top1_mean": statistics.fmean(r["group_top1"] for r in mine),
            "groups": mine[0]["groups"],
            "cue_hit_per_group_mean": [_mean(r["cue_hit_per_group"][g] for r in mine)
                                       for g in range(len(mine[0]["groups"]))],
            "epochs": mine[0]["epochs"],
            "snet_pretrain_epochs": mine[0].get("snet_pretrain_epochs", 0),
        })
    names = {recipe.name for recipe in recipes}
    differences = []
    for a, b in COMPARISONS:
        if a in names and b in names:
            mean, se = paired_difference([r for r in results if r["recipe"] == a], [r for r in results if r["recipe"] == b])
            differences.append({"recipe": a, "against": b, "top1_difference": mean, "top1_difference_se": se})
    return {"seeds": seeds, "rows": rows, "differences": differences, "runs": results}


# The comparisons the proof's claims rest on: (recipe, against).
COMPARISONS = (("s2dnet", "s2dnet-warmup"), ("s2dnet", "uniform"), ("s2dnet", "synopsis"),
               ("s2dnet-warmup", "synopsis"), ("s2dnet-learned", "s2dnet"), ("temporal-only", "s2dnet"),
               ("spatial-only", "s2dnet"), ("spatial-only", "s2dnet-warmup"))


def top1_standard_error(runs: list[dict]) -> float:
    """Standard error (points) of the mean top-1 over seeds: each seed's top-1 a binomial
    proportion over its validation videos, the seeds independent."""
    return math.sqrt(sum(r["top1"] * (100 - r["top1"]) / r["num_videos"] for r in runs)) / len(runs)


def paired_difference(runs: list[dict], against: list[dict]) -> tuple[float, float]:
    """Mean over seeds of the top-1 difference between two recipes on the same validation
    videos, and its standard error from the per-video differences (pairing removes the videos'
    shared difficulty, so it is smaller than the two top-1s' own errors together)."""
    means, variances = [], []
    for run, other in zip(sorted(runs, key=lambda r: r["seed"]), sorted(against, key=lambda r: r["seed"])):
        diff = 100.0 * (_correct(run) - _correct(other))
        means.append(float(diff.mean()))
        variances.append(float(diff.var(ddof=1)) / diff.size if diff.size > 1 else 0.0)
    return statistics.fmean(means), math.sqrt(sum(variances)) / len(means)


def _correct(run: dict) -> np.ndarray:
    return np.array([c == "1" for c in run["correct"]], dtype=float)


def _mean(values) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _epochs(row: dict) -> str:
    snet = row.get("snet_pretrain_epochs", 0)
    return f"{row['epochs']} + {snet} SNet" if snet else str(row["epochs"])


def format_markdown(summary: dict) -> str:
    seeds = ", ".join(str(s) for s in summary["seeds"])
    lines = [
        f"| recipe | what | top-1 (mean ± s.e.) | top-1 per seed ({seeds}) | mAP (mean) | GFLOPs/video | epochs "
        "| train min (mean) | cue in a detail frame | window holds the cue | zoom | top-1 cue shown | top-1 cue missed "
        "| group right |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary["rows"]:
        per_seed = ", ".join(f"{v:.1f}" for v in row["top1_per_seed"])
        lines.append(
            f"| {row['recipe']} | {row['what']} | {row['top1_mean']:.2f} ± {row['top1_se']:.2f} | {per_seed} | {row['mAP_mean']:.2f} "
            f"| {row['gflops_per_video']:.3f} | {_epochs(row)} | {row['train_minutes_mean']:.1f} "
            f"| {100 * row['cue_hit_mean']:.1f}% | {100 * row['cue_in_window_mean']:.1f}% | {row['zoom_mean']:.2f} "
            f"| {_percent(row['top1_cue_shown_mean'])} | {_percent(row['top1_cue_missed_mean'])} "
            f"| {row['group_top1_mean']:.1f} |"
        )
    groups = ", ".join(summary["rows"][0]["groups"])
    lines += ["", f"Cue in a detail frame per true colour group (mean of seeds {seeds}; {groups}):", ""]
    lines += [f"- {row['recipe']}: " + ", ".join("-" if v is None else f"{v:.1f}%" for v in row["cue_hit_per_group_mean"])
              for row in summary["rows"]]
    if summary["differences"]:
        lines += ["", f"Top-1 differences on the same validation videos (mean of seeds {seeds} ± paired s.e.):", ""]
        lines += [f"- {d['recipe']} minus {d['against']}: {d['top1_difference']:+.2f} ± {d['top1_difference_se']:.2f} points"
                  for d in summary["differences"]]
    return "\n".join(lines) + "\n"


def choose_recipes(recipes: list[str] | None) -> list[Recipe]:
    """The named recipes (all when None) in the proof's order; each with the ones it starts from."""
    names = [r.name for r in RECIPES]
    chosen = list(RECIPES) if not recipes else []
    for name in recipes or []:
        if name not in names:
            raise click.UsageError(f"unknown recipe {name!r}; recipes: {', '.join(names)}")
        recipe = RECIPES[names.index(name)]
        for needed in recipe.needs:
            if needed not in recipes:
                raise click.UsageError(f"recipe {name} starts from {needed}: list both")
        chosen.append(recipe)
    return sorted(chosen, key=lambda r: names.index(r.name))


@dataclass(frozen=True)
class Run:
    """One recipe trained for one seed in one proof folder (OUT/<task>), with its pairs."""
    out_dir: Path
    overrides: tuple[str, ...]
    seed: int
    recipe: Recipe

    def after(self, name: str) -> tuple[Path, int, str]:
        return self.out_dir, self.seed, name

    @property
    def result_path(self) -> Path:
        return _result_path(self.out_dir, self.seed, self.recipe.name)


def _result_path(out_dir: Path, seed: int, name: str) -> Path:
    return out_dir / f"seed{seed}" / name / "result.json"


def run_all(runs: list[Run], jobs: int = 1) -> dict[tuple[Path, int, str], dict]:
    """Train and evaluate every run, each after the runs it starts from; returns the results by
    (folder, seed, recipe). With `jobs` > 1, that many runs at once, each in its own process with
    its share of the CPU's threads: on the 2-core machine two one-thread training steps together
    did 1.4x the videos of one two-thread step (bench/RESULTS.md), small convolutions being poor
    at using a second thread. The chains of runs (synopsis, then warmup, then the sampling
    stages) start first; the uniform baseline fills the gaps."""
    results: dict[tuple[Path, int, str], dict] = {}
    if jobs == 1:
        for run in runs:
            results[run.after(run.recipe.name)] = _run(run, _needed(run, results))
        return results
    followers = {r.name: sum(r.name in other.needs for other in RECIPES) for r in RECIPES}
    pending = sorted(runs, key=lambda run: -followers[run.recipe.name])  # stable: the given order within
    threads = max(1, len(os.sched_getaffinity(0)) // jobs)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked threads or loaders
    stop_on_sigterm = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                                 initargs=(threads, _clock["start"])) as pool:
            _schedule(pool, pending, jobs, results)
    except KeyboardInterrupt:
        raise click.ClickException("stopped: the runs in progress saved their checkpoints; run the proof again "
                                   "with the same --out to continue") from None
    except BrokenProcessPool:
        raise click.ClickException("a worker process died (killed: out of memory?); run the proof again with the "
                                   "same --out to continue, with fewer --jobs if it was memory") from None
    finally:
        signal.signal(signal.SIGTERM, stop_on_sigterm)
    return results


def _schedule(pool: ProcessPoolExecutor, pending: list[Run], jobs: int, results: dict) -> None:
    running: dict = {}
    try:
        while pending or running:
            ready = [r for r in pending if all(r.after(n) in results for n in r.recipe.needs)]
            done_before = [r for r in ready if r.result_path.is_file()
                           and _looked_at_all(json.loads(r.result_path.read_text()))]
            for run in done_before:  # read back here, not in a worker; it may ready others (the rest look again there)
                pending.remove(run)
                results[run.after(run.recipe.name)] = _run(run, _needed(run, results))
            if done_before:
                continue
            for run in ready[:jobs - len(running)]:
                pending.remove(run)
                running[pool.submit(_run_in_worker, run, _needed(run, results))] = run
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                run = running.pop(future)
                results[run.after(run.recipe.name)] = future.result()
    except BaseException:
        # Stopped, or a run failed: the running ones save a checkpoint and stop too, so that a
        # rerun continues them, on one signal each (a second one stops a run at once, keeping
        # its last checkpoint). The workers are in a process group of their own, out of the
        # terminal's Ctrl-C, so this is the one (when a worker died, the pool may have sent the
        # others SIGTERM too).
        for worker in multiprocessing.active_children():
            os.kill(worker.pid, signal.SIGINT)
        pool.shutdown(wait=True, cancel_futures=True)
        raise


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _needed(run: Run, results: dict) -> dict[str, dict]:
    return {name: results[run.after(name)] for name in run.recipe.needs}


def _run(run: Run, done: dict[str, dict]) -> dict:
    return run_recipe(run.recipe, run.seed, run.out_dir, list(run.overrides), done)


def _start_worker(threads: int, start: float) -> None:
    os.setpgrp()  # a terminal's Ctrl-C reaches the proof, which passes it on once
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only a training run stops on it, saving first
    torch.set_num_threads(threads)
    _clock.update(start=start, console=sys.stderr)


def _run_in_worker(run: Run, done: dict[str, dict]) -> dict:
    """One run in a worker process: its training log goes to console.txt in its folder (the
    trainer also writes log_<stage>.txt there), the proof's progress lines to the console."""
    folder = run.result_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "console.txt", "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        with StopRequest():  # a stop while the run is set up reaches its training loop
            return _run(run, done)


def _plan(seeds: list[int], out_dir: Path, overrides: list[str], chosen: list[Recipe]) -> list[Run]:
    for recipe in chosen:  # fail on a bad override before hours of training, not after
        cfg = recipe_config(recipe, seeds[0], out_dir, overrides)
    _check_task(cfg)
    for seed in seeds:  # each seed's dataset, before any run reads it
        resolve_dataset(recipe_config(chosen[0], seed, out_dir, overrides))
    return [Run(out_dir, tuple(overrides), seed, recipe) for seed in seeds for recipe in chosen]


def _summary(results: dict, out_dir: Path, seeds: list[int], chosen: list[Recipe]) -> dict:
    return summarise([results[(out_dir, seed, recipe.name)] for seed in seeds for recipe in chosen], chosen, seeds)


def run_proof(seeds: list[int], out_dir: str | Path, overrides: list[str], recipes: list[str] | None = None,
              jobs: int = 1) -> dict:
    """Every recipe for every seed in one folder (a sampling recipe after its warmup); returns the summary."""
    chosen, out = choose_recipes(recipes), Path(out_dir)
    return _summary(run_all(_plan(seeds, out, overrides, chosen), jobs), out, seeds, chosen)


def _check_task(cfg) -> None:
    """A dataset named by DATA.ROOT must hold the task the cue metrics will render."""
    meta = read_meta(Path(cfg.DATA.ROOT).expanduser()) if cfg.DATA.ROOT else None
    if meta is not None and meta["task"] != cfg.SYNTHETIC.TASK:
        raise click.UsageError(f"DATA.ROOT {cfg.DATA.ROOT} holds the {meta['task']} task, not "
                               f"{cfg.SYNTHETIC.TASK} (--tasks)")


def run_tasks(tasks: list[str], seeds: list[int], out_dir: str | Path, overrides: list[str],
              recipes: list[str] | None = None, jobs: int = 1) -> dict[str, dict]:
    """The proof on each built-in task, in OUT/<task>/; returns each task's summary."""
    if "SYNTHETIC.TASK" in overrides[::2]:
        raise click.UsageError("choose the built-in tasks with --tasks, not SYNTHETIC.TASK")
    for task in tasks:
        if task not in CHOICES["SYNTHETIC.TASK"]:
            raise click.UsageError(f"unknown task {task!r}; tasks: {', '.join(CHOICES['SYNTHETIC.TASK'])}")
    chosen = choose_recipes(recipes)
    folders = {task: Path(out_dir) / task for task in tasks}
    plans = [_plan(seeds, folders[task], ["SYNTHETIC.TASK", task, *overrides], chosen) for task in tasks]
    results = run_all([run for plan in plans for run in plan], jobs)
    return {task: _summary(results, folders[task], seeds, chosen) for task in tasks}


@click.command(cls=UserErrorCommand, context_settings=PAIRS_SETTINGS)
@click.option("--seeds", default="0,1", show_default=True, help="Dataset and training seeds, comma-separated.")
@click.option("--out", "out_dir", default="runs/proof", show_default=True, type=click.Path(file_okay=False),
              help="Folder for every run's checkpoints, logs and results (a rerun continues in it).")
@click.option("--recipes", help=f"Comma-separated subset of: {', '.join(r.name for r in RECIPES)}.")
@click.option("--tasks", default=",".join(CHOICES["SYNTHETIC.TASK"]), show_default=True,
              help="Built-in tasks (SYNTHETIC.TASK) to run it on, comma-separated; each in OUT/<task>/.")
@click.option("--jobs", default=2, show_default=True, type=click.IntRange(min=1),
              help="Runs trained at once, each in its own process with its share of the cores.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the table as JSON (default OUT/proof.json).")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False),
              help="Write the table as Markdown (default OUT/proof.md).")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_proof_command(seeds, out_dir, recipes, tasks, jobs, json_path, markdown_path, args):
    """Train and evaluate the built-in dataset's recipes for each task and seed: S2DNet against
    the uniform baseline and the temporal-only and spatial-only ablations, with the same detail
    budget.

    ARGS: KEY VALUE pairs applied to every recipe (e.g. DATA.CACHE_DIR /data/cache).
    """
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise click.UsageError(f"--seeds takes comma-separated integers; got {seeds!r}") from None
    if not seed_list:
        raise click.UsageError("--seeds is empty")
    if len(args) % 2:
        raise click.UsageError(f"KEY VALUE pairs come in pairs; {args[-1]!r} has no value")
    chosen = [r.strip() for r in recipes.split(",")] if recipes else None
    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    summaries = run_tasks(task_list, seed_list, out_dir, list(args), chosen, jobs)
    tables = {task: format_markdown(summary) for task, summary in summaries.items()}
    for task, summary in summaries.items():  # each task's own files, then both together
        (Path(out_dir) / task / "proof.json").write_text(json.dumps(summary, indent=2) + "\n")
        (Path(out_dir) / task / "proof.md").write_text(tables[task])
    table = "\n".join(f"### {task}\n\n{text}" for task, text in tables.items())
    click.echo(table)
    json_file = Path(json_path or Path(out_dir) / "proof.json")
    md_file = Path(markdown_path or Path(out_dir) / "proof.md")
    json_file.parent.mkdir(parents=True, exist_ok=True)
    json_file.write_text(json.dumps({"tasks": summaries}, indent=2) + "\n")
    md_file.parent.mkdir(parents=True, exist_ok=True)
    md_file.write_text(table)
    click.echo(f"wrote {json_file} and {md_file}")
