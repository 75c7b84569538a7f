"""The `s2d-fast` command."""

from __future__ import annotations

import re
from pathlib import Path

import click

from s2d_fast.config import ConfigError, load_config

_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$|^[A-Z][A-Z0-9_]*$")


def _user_errors():
    """The exceptions that are the user's to fix: shown as one message, no traceback."""
    from s2d_fast.data.loader import VideoReadError
    from s2d_fast.engine.checkpoint import CheckpointError
    from s2d_fast.engine.trainer import NonFiniteLossError

    return (ConfigError, CheckpointError, FileNotFoundError, FileExistsError, VideoReadError, NonFiniteLossError)


def split_positionals(args: tuple[str, ...]) -> tuple[str | None, str | None, list[str]]:
    """The paper's form `DATASET CONFIG.yaml KEY VALUE ...`: leading words before the first
    upper-case KEY are a dataset name and/or a YAML path; the rest are KEY VALUE pairs."""
    dataset = config = None
    rest = list(args)
    while rest and not _KEY.match(rest[0]):
        word = rest.pop(0)
        if word.endswith((".yaml", ".yml")) and config is None:
            config = word
        elif dataset is None and config is None:
            dataset = word
        else:
            raise click.UsageError(
                f"unexpected argument {word!r}: after the dataset name and config file come KEY VALUE pairs"
            )
    return dataset, config, rest


def _load(config_file, positional, dataset=None, stage=None, output=None):
    pos_dataset, pos_config, pairs = split_positionals(positional)
    if pos_config and config_file:
        raise click.UsageError(f"two config files given: --config {config_file} and {pos_config}")
    overrides: list[str] = []
    for key, value in (
        ("DATA.DATASET", pos_dataset),
        ("DATA.DATASET", dataset),
        ("TRAIN.STAGE", stage),
        ("OUTPUT_DIR", output),
    ):
        if value is not None:
            overrides += [key, value]
    return load_config(config_file or pos_config, overrides + pairs)


def _run(fn):
    try:
        return fn()
    except _user_errors() as err:
        raise click.ClickException(str(err)) from None


def _print_metrics(metrics: dict) -> None:
    click.echo(
        f"top1 {metrics['top1']:.2f}  top5 {metrics['top5']:.2f}  mAP {metrics['mAP']:.2f}  "
        f"({metrics['num_videos']} videos)"
    )
    if metrics.get("unreadable"):
        click.echo(f"{metrics['unreadable']} videos could not be read and count as wrong:")
        for bad in metrics["unreadable_videos"]:
            click.echo(f"  {bad['reason']}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="s2d-fast")
def main():
    """s2d-fast: Synopsis-to-Detail Networks (S2DNet, ECCV 2022) for video recognition.

    Configuration is PySlowFast-style: defaults, then a YAML file, then KEY VALUE pairs,
    e.g. `s2d-fast train --stage warmup TRAIN.BASE_LR 0.01 SNET.ARCH mobilenetv2`.
    """


_PAIRS_HELP = "KEY VALUE pairs override the config (e.g. TRAIN.BATCH_SIZE 16)."


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--stage", type=click.Choice(["warmup", "sampling"]), help="Training stage (default: TRAIN.STAGE).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file.")
@click.option("--dataset", help="Dataset name (DATA.DATASET): synthetic, kinetics400, mini-kinetics, ...")
@click.option("--output", type=click.Path(file_okay=False), help="Output folder (OUTPUT_DIR).")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def train(stage, config_file, dataset, output, args):
    """Train S2DNet: warmup (sampler at the identity), then sampling.

    \b
    ARGS: [DATASET] [CONFIG.yaml] [KEY VALUE]..., as in the paper's README:
      s2d-fast train mini-kinetics configs/mini_kinetics/train_warmup.yaml \\
          NUM_GPUS 1 TRAIN.BASE_LR 1e-5 TRAIN.BATCH_SIZE 32 SNET.ARCH mobilenetv2
    With no dataset configured, the built-in synthetic dataset is generated on first use.
    `EVALUATE True` evaluates TRAIN.RESUME (or the newest checkpoint) instead of training.
    The sampling stage starts from TRAIN.RESUME or this OUTPUT_DIR's warmup checkpoint.
    """

    def go():
        cfg = _load(config_file, args, dataset, stage, output)
        if cfg.EVALUATE:
            from s2d_fast.engine.evaluate import evaluate_checkpoint

            _print_metrics(evaluate_checkpoint(cfg))
            return
        from s2d_fast.engine.trainer import train as run_train

        result = run_train(cfg)
        if result["metrics"]:
            _print_metrics(result["metrics"])
        click.echo(f"checkpoint: {result['checkpoint']}  ({result['train_seconds']:.0f} s of training)")

    _run(go)


@main.command(name="eval", context_settings={"ignore_unknown_options": True})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Checkpoint (default: OUTPUT_DIR's newest).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the metrics to this JSON file.")
@click.option("--output", type=click.Path(file_okay=False), help="Output folder (OUTPUT_DIR) to find checkpoints in.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def evaluate(config_file, checkpoint, json_path, output, args):
    """Evaluate a checkpoint on the validation list: top-1, top-5 and mAP.

    ARGS: [DATASET] [CONFIG.yaml] [KEY VALUE]... as for `train`.
    """

    def go():
        from s2d_fast.engine.evaluate import evaluate_checkpoint, write_json

        cfg = _load(config_file, args, output=output)
        metrics = evaluate_checkpoint(cfg, checkpoint)
        _print_metrics(metrics)
        if json_path:
            click.echo(f"wrote {write_json(metrics, json_path)}")

    _run(go)


@main.command(context_settings={"ignore_unknown_options": True})
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
    paths = list(videos)
    first_key = next((i for i, word in enumerate(paths) if _KEY.match(word)), len(paths))
    paths, pairs = paths[:first_key], paths[first_key:]

    def go():
        from s2d_fast.engine.predict import predict_videos

        cfg = load_config(config_file, pairs)
        for result in predict_videos(cfg, paths, checkpoint, label_map=label_map, save_vis=save_vis):
            click.echo(result["video"])
            for class_id, name, prob in result["top"]:
                click.echo(f"  {prob:.3f}  {name} ({class_id})")
            if "figure" in result:
                click.echo(f"  wrote {result['figure']}")

    _run(go)


@main.group()
def prepare():
    """Prepare datasets: generate the built-in one, extract frames, build list files."""


@prepare.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder to write into.")
@click.option("--num-train", default=800, show_default=True, help="Training videos.")
@click.option("--num-val", default=200, show_default=True, help="Validation videos.")
@click.option("--seed", default=0, show_default=True, help="Generator seed; the same seed writes the same data.")
@click.option("--format", "fmt", type=click.Choice(["webm", "mp4", "frames"]), default="webm", show_default=True,
              help="VP9 webm, H.264 mp4, or TSN-style JPEG frame folders.")
def synthetic(out_dir, num_train, num_val, seed, fmt):
    """Write the built-in details dataset: encoded videos and TSN list files.

    Each video hides one small object, visible for a few frames at a random time and place,
    among moving clutter; its colour gives its group, a fine pattern (rows, columns, checks) its class.
    """
    from s2d_fast.data.synthetic import generate_synthetic

    root = _run(lambda: generate_synthetic(Path(out_dir), num_train, num_val, seed, fmt))
    click.echo(f"wrote {root}")


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the table as JSON.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def flops(config_file, json_path, args):
    """GFLOPs per video and parameters of SNet, the sampler, DNet and the total (fvcore).

    Counted for the configured input sizes and frame counts, in the sampling stage (f_theta
    active), next to the uniform baseline and TSM with K and 2K uniform frames. One
    multiply-add counts as one FLOP, as the TSM paper reports.
    ARGS: [DATASET] [CONFIG.yaml] [KEY VALUE]... as for `train`.
    """

    def go():
        from s2d_fast.engine.evaluate import write_json
        from s2d_fast.models.flops import flops_report, format_flops_table

        report = flops_report(_load(config_file, args))
        click.echo(format_flops_table(report))
        if json_path:
            click.echo(f"wrote {write_json(report, json_path)}")

    _run(go)


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="Training checkpoint (.pt).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output .safetensors file.")
def export(checkpoint, out_path):
    """Write a checkpoint's model weights as plain safetensors (no optimiser, no pickle)."""
    from s2d_fast.engine.checkpoint import export_weights

    click.echo(f"wrote {_run(lambda: export_weights(checkpoint, out_path))}")


@main.group()
def bench():
    """Benchmarks: our kernels and pipelines against the reference ops, side by side."""


@bench.command(name="kernels")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu or cuda.")
@click.option("--repeats", default=20, show_default=True, help="Timed repeats per case; medians are reported.")
@click.option("--quick", is_flag=True, help="Fewer shapes and repeats: a smoke run.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the rows as JSON.")
def bench_kernels_command(device, repeats, quick, json_path):
    """Time temporal_shift, gather_frames and sample_details against their references.

    Shapes are TSM-ResNet-50's shift inputs for 8 and 16 frames at 224 (batch 8) and a gather
    of 8 of 32 uint8 candidates at 224. On CPU the torch paths are compared with the reference
    and with a clone of the same tensor (the floor for producing a new tensor); on CUDA the
    Triton kernels also report GB/s and the fraction of device-to-device copy bandwidth.
    """
    from s2d_fast.bench.kernels import bench_kernels

    bench_kernels(device=device, repeats=repeats, json_path=json_path, quick=quick)


def _register_commands() -> None:
    """Commands that live beside the code they drive: the data layer's and the benchmarks'."""
    from s2d_fast.bench.eval import bench_eval_command
    from s2d_fast.bench.proof import bench_proof_command
    from s2d_fast.data.commands import bench_data, prepare_frames, prepare_lists, prepare_mini_kinetics

    prepare.add_command(prepare_frames, "frames")
    prepare.add_command(prepare_lists, "lists")
    prepare.add_command(prepare_mini_kinetics, "mini-kinetics")
    bench.add_command(bench_data, "data")
    bench.add_command(bench_eval_command, "eval")
    bench.add_command(bench_proof_command, "proof")


_register_commands()

if __name__ == "__main__":
    main()
