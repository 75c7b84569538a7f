"""The `s2d-fast` command: a thin dispatcher over the engine, the data preparation and the
benchmarks. Each command reads its config the same way (`cli_support.config_from_args`), and a
user's mistake in any of them prints as one line (`cli_support.UserErrorGroup`)."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from s2d_fast.bench.compiled import bench_compiled_command
from s2d_fast.bench.data import bench_data_command
from s2d_fast.bench.eval import bench_eval_command
from s2d_fast.bench.gpu_check import bench_gpu_command
from s2d_fast.bench.kernels import bench_kernels_command
from s2d_fast.bench.proof import bench_proof_command
from s2d_fast.bench.train import bench_train_command
from s2d_fast.checkpoint import checkpoint_path, newest_checkpoint
from s2d_fast.cli_support import (
    PAIRS_SETTINGS,
    UserErrorGroup,
    builtin_recipe,
    config_arguments,
    config_from_args,
    split_pairs,
    split_positionals,
)
from s2d_fast.config import CHOICES, get_defaults
from s2d_fast.data.commands import prepare_frames, prepare_lists, prepare_mini_kinetics

_DEFAULTS = get_defaults()


# Reasons printed per kind of problem; the JSON (--json) and TEST.PREDICTIONS hold them all.
_SHOWN_REASONS = 5


def _print_metrics(metrics: dict) -> None:
    checkpoint = metrics.get("checkpoint", {})
    scored = f" of {checkpoint['path']} (stage {checkpoint['stage']}, epoch {checkpoint['epoch']})" if checkpoint else ""
    click.echo(
        f"top1 {metrics['top1']:.2f}  top5 {metrics['top5']:.2f}  mAP {metrics['mAP']:.2f}  "
        f"({metrics['num_videos']} videos){scored}"
    )
    if "snet_top1" in metrics:
        click.echo(f"  the synopsis network alone: top-1 {metrics['snet_top1']:.2f}  top-5 {metrics['snet_top5']:.2f}")
    for count, what, items in (
        (metrics.get("unreadable"), "videos could not be read", [b["reason"] for b in metrics.get("unreadable_videos", [])]),
        (metrics.get("rejected"), "list rows were malformed", [f"{r['where']}: {r['reason']}" for r in metrics.get("rejected_rows", [])]),
    ):
        if not count:
            continue
        click.echo(f"{count} {what} and count as wrong:")
        for reason in items[:_SHOWN_REASONS]:
            click.echo(f"  {reason}")
        if len(items) > _SHOWN_REASONS:
            click.echo(f"  ... and {len(items) - _SHOWN_REASONS} more (all in the JSON, --json)")


@click.group(cls=UserErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="s2d-fast")
def main():
    """s2d-fast: Synopsis-to-Detail Networks (S2DNet, ECCV 2022) for video recognition.

    Configuration is PySlowFast-style: defaults, then a YAML file, then KEY VALUE pairs,
    e.g. `s2d-fast train --stage warmup TRAIN.BASE_LR 0.01 SNET.ARCH mobilenetv2`.
    """


@main.command(context_settings=PAIRS_SETTINGS)
@click.option("--stage", type=click.Choice(CHOICES["TRAIN.STAGE"]), help="Training stage (default: TRAIN.STAGE).")
@click.option("--dataset", help="Dataset name (DATA.DATASET): synthetic, kinetics400, mini-kinetics, ...")
@click.option("--output", type=click.Path(file_okay=False), help="Output folder (OUTPUT_DIR).")
@config_arguments
def train(stage, dataset, output, config_file, args):
    """Train S2DNet: warmup (the sampler fixed), then sampling.

    \b
    ARGS: [DATASET] [CONFIG.yaml] [KEY VALUE]..., as in the paper's README:
      s2d-fast train mini-kinetics configs/mini_kinetics/train_warmup.yaml \\
          NUM_GPUS 1 TRAIN.BASE_LR 1e-5 TRAIN.BATCH_SIZE 32 SNET.ARCH mobilenetv2
    With no dataset configured, the built-in synthetic dataset is generated on first use.
    `EVALUATE True` evaluates TRAIN.RESUME (or the newest checkpoint) instead of training.
    The sampling stage starts from TRAIN.RESUME or this OUTPUT_DIR's warmup checkpoint.
    """
    options = {"DATA__DATASET": dataset, "TRAIN__STAGE": stage, "OUTPUT_DIR": output}
    cfg = config_from_args(config_file, args, recipe="train_{stage}", **options)
    if cfg.EVALUATE:
        from s2d_fast.engine.evaluate import evaluate_checkpoint

        outcome = evaluate_checkpoint(cfg)
        if outcome.reports:
            _print_metrics(outcome.value)
        return
    if not (config_file or split_positionals(args)[1]):
        _train_synopsis_first(cfg, args)
    _report_training(_train(cfg))


def _train(cfg):
    from s2d_fast.engine.trainer import train as run_train

    return run_train(cfg)


def _train_synopsis_first(cfg, args) -> None:
    """The built-in recipes start SNet from the synopsis network trained alone (its own recipe):
    train it first when its checkpoint is missing."""
    synopsis = config_from_args(str(builtin_recipe("synopsis")), args)
    start = checkpoint_path(synopsis.OUTPUT_DIR, "warmup", "last")
    if cfg.TRAIN.STAGE != "warmup" or cfg.SNET.PRETRAINED != str(start) or start.is_file():
        return
    click.echo(f"SNET.PRETRAINED {start} is missing: training the synopsis network first "
               f"({builtin_recipe('synopsis')}, {synopsis.TRAIN.EPOCHS} epochs)", err=True)
    _report_training(_train(synopsis), then="the warmup")


def _report_training(outcome, then: str = "") -> None:
    """The result of a training run, once; a run stopped by a signal exits 128 + its number."""
    if not outcome.reports:
        raise click.exceptions.Exit(0)
    result = outcome.value
    if result["metrics"]:
        _print_metrics(result["metrics"])
    if result["stopped"]:
        name = signal.Signals(result["signal"]).name
        click.echo(f"stopped by {name} at epoch {result['epoch'] + 1}, iteration {result['iteration']}; checkpoint "
                   f"{result['checkpoint']}; run the same command again to continue")
        raise click.exceptions.Exit(128 + result["signal"])
    if result["done_before"]:
        trained = f"trained already: {result['epoch']} epochs" if result["epoch"] else "TRAIN.EPOCHS 0: nothing trained"
        click.echo(f"checkpoint: {result['checkpoint']}  ({trained})")
    else:
        click.echo(f"checkpoint: {result['checkpoint']}  ({result['train_seconds']:.0f} s of training)"
                   + (f"; now {then}" if then else ""))


@main.command(name="eval", context_settings=PAIRS_SETTINGS)
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Checkpoint (default: OUTPUT_DIR's newest).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the metrics to this JSON file.")
@click.option("--output", type=click.Path(file_okay=False), help="Output folder (OUTPUT_DIR) to find checkpoints in.")
@config_arguments
def evaluate(checkpoint, json_path, output, config_file, args):
    """Evaluate a checkpoint on the validation list: top-1, top-5 and mAP.

    ARGS: [DATASET] [CONFIG.yaml] [KEY VALUE]... as for `train`.
    """
    from s2d_fast.engine.evaluate import evaluate_checkpoint, write_json

    cfg, checkpoint = _model_config(config_file, args, checkpoint, OUTPUT_DIR=output)
    outcome = evaluate_checkpoint(cfg, checkpoint)
    if not outcome.reports:
        return
    _print_metrics(outcome.value)
    if json_path:
        click.echo(f"wrote {write_json(outcome.value, json_path)}")


@main.command(context_settings=PAIRS_SETTINGS)
@click.argument("videos", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Checkpoint (default: OUTPUT_DIR's newest).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config the model was trained with.")
@click.option("--label-map", type=click.Path(dir_okay=False), help="Class names, one per line (index = label).")
@click.option("--save-vis", type=click.Path(dir_okay=False),
              help="PNG of what the model looked at (OUT.png, then OUT-2.png, ... per video).")
def predict(videos, checkpoint, config_file, label_map, save_vis):
    """Top-5 actions of each VIDEO (a video file or a folder of JPEG frames).

    \b
    VIDEO... may end with KEY VALUE pairs that override the config, e.g.
      s2d-fast predict clip.mp4 --checkpoint best.pt --save-vis seen.png DATA.NUM_CANDIDATES 32
    The PNG shows the synopsis frames, where the detail frames sit in time, each detail
    frame's zoom window, what the detail network saw, and the top-5 bars.
    """
    from s2d_fast.engine.predict import iter_predictions
    from s2d_fast.engine.runtime import setup_logging

    setup_logging()  # the inference settings, on stderr
    paths, pairs = split_pairs(list(videos))
    cfg, checkpoint = _model_config(config_file, tuple(pairs), checkpoint)
    failed = 0
    for result in iter_predictions(cfg, paths, checkpoint, label_map=label_map, save_vis=save_vis, keep_going=True):
        if "error" in result:
            failed += 1
            click.echo(f"Error: {result['error']}", err=True)
            continue
        click.echo(result["video"])
        for class_id, name, prob in result["top"]:
            click.echo(f"  {prob:.3f}  {name} ({class_id})")
        if "figure" in result:
            click.echo(f"  wrote {result['figure']}")
    if failed:
        raise click.exceptions.Exit(1)


def _model_config(config_file, args, checkpoint, **options):
    """The config and checkpoint to evaluate or predict with. With `--config`, that config and
    its OUTPUT_DIR's newest checkpoint (or the one named). Without, the checkpoint's own saved
    config, so that its model is built as it was trained: the checkpoint named, else TRAIN.RESUME,
    else the newest in OUTPUT_DIR (the built-in recipe's when nothing else says)."""
    if config_file or split_positionals(args)[1]:
        cfg = config_from_args(config_file, args, **options)
        return cfg, checkpoint or cfg.TRAIN.RESUME or str(newest_checkpoint(cfg.OUTPUT_DIR))
    if not checkpoint:
        where = config_from_args(None, args, recipe="train_sampling", **options)
        checkpoint = where.TRAIN.RESUME or str(newest_checkpoint(where.OUTPUT_DIR))
    return config_from_args(None, args, checkpoint=checkpoint, **options), checkpoint


@main.group()
def prepare():
    """Prepare datasets: generate the built-in one, extract frames, build list files."""


@prepare.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder to write into.")
@click.option("--num-train", default=_DEFAULTS.SYNTHETIC.NUM_TRAIN, show_default=True, help="Training videos.")
@click.option("--num-val", default=_DEFAULTS.SYNTHETIC.NUM_VAL, show_default=True, help="Validation videos.")
@click.option("--seed", default=_DEFAULTS.SYNTHETIC.SEED, show_default=True,
              help="Generator seed; the same seed writes the same data.")
@click.option("--format", "fmt", type=click.Choice(CHOICES["SYNTHETIC.FORMAT"]), default=_DEFAULTS.SYNTHETIC.FORMAT,
              show_default=True, help="VP9 webm, H.264 mp4, or TSN-style JPEG frame folders.")
@click.option("--task", type=click.Choice(CHOICES["SYNTHETIC.TASK"]), default=_DEFAULTS.SYNTHETIC.TASK,
              show_default=True, help="The generator: tiles (a striped tile shows briefly) or balls (a moving "
              "ball lights up with a pattern).")
def synthetic(out_dir, num_train, num_val, seed, fmt, task):
    """Write a built-in details dataset: encoded videos and TSN list files.

    In each video one small object shows its colour (the group) and a fine pattern (the class)
    for a few frames, at a random time and place, among moving clutter: a tile that appears
    (tiles: rows, columns, checks) or a moving ball that lights up (balls: slash, backslash, rings).
    """
    from s2d_fast.data.synthetic import generate_synthetic

    click.echo(f"wrote {generate_synthetic(Path(out_dir), num_train, num_val, seed, fmt, task=task)}")


prepare.add_command(prepare_frames, "frames")
prepare.add_command(prepare_lists, "lists")
prepare.add_command(prepare_mini_kinetics, "mini-kinetics")


@main.command(context_settings=PAIRS_SETTINGS)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the table as JSON.")
@config_arguments
def flops(json_path, config_file, args):
    """GFLOPs per video and parameters of SNet, the sampler, DNet and the total (fvcore).

    Counted for the configured input sizes and frame counts, in the sampling stage (f_theta
    active), next to the uniform baseline and TSM with K and 2K uniform frames. One
    multiply-add counts as one FLOP, as the TSM paper reports.
    ARGS: [DATASET] [CONFIG.yaml] [KEY VALUE]... as for `train`.
    """
    from s2d_fast.data.datasets import resolve_num_classes
    from s2d_fast.engine.evaluate import write_json
    from s2d_fast.models.flops import flops_report, format_flops_table

    cfg = config_from_args(config_file, args)
    report = flops_report(cfg, *resolve_num_classes(cfg))
    click.echo(format_flops_table(report))
    if json_path:
        click.echo(f"wrote {write_json(report, json_path)}")


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="Training checkpoint (.pt).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output .safetensors file.")
def export(checkpoint, out_path):
    """Write a checkpoint's model weights as plain safetensors (no optimiser, no pickle)."""
    from s2d_fast.checkpoint import export_weights

    click.echo(f"wrote {export_weights(checkpoint, out_path)}")


@main.group()
def bench():
    """Benchmarks: our kernels and pipelines against the reference ops, side by side."""


bench.add_command(bench_kernels_command, "kernels")
bench.add_command(bench_data_command, "data")
bench.add_command(bench_eval_command, "eval")
bench.add_command(bench_compiled_command, "compiled")
bench.add_command(bench_train_command, "train")
bench.add_command(bench_gpu_command, "gpu")
bench.add_command(bench_proof_command, "proof")

if __name__ == "__main__":
    main()
