"""Click commands of the data layer, `prepare frames|lists|mini-kinetics` (registered on the
`s2d-fast prepare` group by s2d_fast.cli)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from s2d_fast.cli_support import UserErrorCommand

from . import prepare as P
from .datasets import DATASETS
from .decoders import TSN_FRAME_TEMPLATE


_SHOWN = 5  # skipped entries named on the terminal; the file has them all


def _print_summary(what: str, written: dict, skipped: Counter) -> None:
    for name, count in written.items():
        click.echo(f"{name}: {count} {what}")
    for reason, count in sorted(skipped.items()):
        click.echo(f"skipped {count}: {reason}")


@click.command(cls=UserErrorCommand)
@click.argument("video_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--template", default=TSN_FRAME_TEMPLATE, show_default=True, help="Frame file names, 1-based.")
@click.option("--short-side", default=0, show_default=True, help="Resize the short side to this; 0 keeps the size.")
@click.option("--quality", default=95, show_default=True, help="JPEG quality.")
@click.option("--workers", default=0, help="Processes (default: one per core).")
def prepare_frames(video_dir, out_dir, template, short_side, quality, workers):
    """Extract JPEG frames of every video under VIDEO_DIR into OUT_DIR/<sub-folders>/<video name>/.

    Resumable: finished videos are skipped, partial ones (an interrupted run) redone.
    """
    summary = P.extract_frames(video_dir, out_dir, template=template, short_side=short_side, quality=quality,
                               workers=workers)
    click.echo(f"extracted {len(summary['done'])}, skipped {len(summary['skipped'])} already extracted, "
               f"failed {len(summary['failed'])}")
    for failure in summary["failed"]:
        click.echo(f"failed: {failure['reason']}")
    if summary["failed"]:
        raise click.exceptions.Exit(1)


@click.command(cls=UserErrorCommand)
@click.argument("kind", type=click.Choice(["kinetics", "somethingv1", "somethingv2"]))
@click.option("--root", required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset root: the videos or frame folders the lists will name.")
@click.option("--train", "train_ann", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Training annotations: Kinetics CSV, SSv1 CSV or SSv2 JSON.")
@click.option("--val", "val_ann", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Validation annotations, same kind.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False),
              help="Class names: SSv1 labels CSV or SSv2 labels.json (Kinetics: taken from --train).")
@click.option("--template", help="Frame names, to count frames (default: the dataset's own, img_{:05d}.jpg for "
                                   "Kinetics, {:05d}.jpg for Something-Something V1, {:06d}.jpg for V2).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Where to write (default: --root).")
def prepare_lists(kind, root, train_ann, val_ann, labels, template, out_dir):
    """TSN list files (`path num_frames label`) and classes.txt from official annotations.

    Entries whose video or frame folder is missing or has no frames are left out and counted.
    """
    root = Path(root)
    out = Path(out_dir or root)
    out.mkdir(parents=True, exist_ok=True)
    template = template or DATASETS["kinetics400" if kind == "kinetics" else kind].frame_template
    if kind != "kinetics" and not labels:
        raise click.UsageError(f"{kind} needs --labels")
    names = {"kinetics": ("train.txt", "val.txt")}.get(kind, ("train_videofolder.txt", "val_videofolder.txt"))
    skipped: Counter = Counter()
    left_out: list[str] = []
    written = {}
    classes = None
    for ann, name in zip((train_ann, val_ann), names):
        if kind == "kinetics":
            rows, classes = P.kinetics_rows(Path(ann), root, classes)
        elif kind == "somethingv1":
            rows, classes = P.something_v1_rows(Path(ann), Path(labels))
        else:
            rows, classes = P.something_v2_rows(Path(ann), Path(labels))
            rows = [(P._resolve(root, video), label) for video, label in rows]
        written[name] = P.write_list(rows, root, out / name, template, skipped, left_out)
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    _print_summary("videos", written, skipped)
    if left_out:
        (out / P.LISTS_SKIPPED_FILE).write_text("".join(left_out))
        for line in left_out[:_SHOWN]:
            click.echo(f"  {line.rstrip()}")
        more = f" ({len(left_out) - _SHOWN} more)" if len(left_out) > _SHOWN else ""
        click.echo(f"skipped entries, one per line{more}: {out / P.LISTS_SKIPPED_FILE}")


@click.command(cls=UserErrorCommand)
@click.option("--root", required=True, type=click.Path(exists=True, file_okay=False),
              help="Kinetics root: the videos or frame folders, at any depth, named <youtube_id> or "
                   "<youtube_id>_<start:06d>_<end:06d>.")
@click.option("--split-train", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Training split: AR-Net's mini_train_videofolder.txt "
                   "(`images/train/<class>/<id>_<start>_<end> <num_frames> <label>` per line), "
                   "or a list of one YouTube id per line (Mini-Kinetics-200's train_ytid_list.txt).")
@click.option("--split-val", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Validation split: AR-Net's mini_val_videofolder.txt, or val_ytid_list.txt.")
@click.option("--kinetics-train", type=click.Path(exists=True, dir_okay=False),
              help="Official Kinetics-400 training CSV: gives the classes of a plain YouTube-id list.")
@click.option("--kinetics-val", type=click.Path(exists=True, dir_okay=False),
              help="Official Kinetics-400 validation CSV, likewise.")
@click.option("--template", default=TSN_FRAME_TEMPLATE, show_default=True, help="Frame names, to count frames.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Where to write (default: --root).")
def prepare_mini_kinetics(root, split_train, split_val, kinetics_train, kinetics_val, template, out_dir):
    """Mini-Kinetics (200 classes): train.txt and val.txt (`path num_frames label`, paths relative
    to --root) for the clips the split files name, classes.txt, and mini_kinetics_skipped.txt.

    Labels are AR-Net's, as its split files give them: the class names numbered 0-199 in sorted
    order (the same order is used for plain YouTube-id lists). Clips are found by YouTube id
    anywhere under --root; frames are counted anew. Entries with no video or frame folder, no
    frames, a repeat, or (plain lists) an id missing from the CSVs are left out and summarised.
    """
    root = Path(root)
    out = Path(out_dir or root)
    # The default --out is the Kinetics root, where `prepare lists kinetics` writes its own
    # train.txt / val.txt: never replace lists this command did not write (its skip file marks them).
    for name in ("train.txt", "val.txt", "classes.txt"):
        if (out / name).is_file() and not (out / P.SKIPPED_FILE).is_file():
            raise click.ClickException(
                f"{out / name} exists and was not written by prepare mini-kinetics; not replacing it "
                "(choose another --out, or remove the file)"
            )
    csvs = [Path(p) for p in (kinetics_train, kinetics_val) if p]
    summary = P.mini_kinetics_lists(root, [(split_train, "train.txt"), (split_val, "val.txt")], out,
                                    csvs=csvs, template=template)
    for name, split in zip(("train.txt", "val.txt"), (split_train, split_val)):
        click.echo(f"{name}: {summary['written'][name]} of the {summary['entries'][name]} videos in "
                   f"{split} ({summary['formats'][name]})")
        for reason, count in sorted(summary["skipped"][name].items()):
            click.echo(f"  skipped {count}: {reason}")
    classes = len(summary["classes"])
    click.echo(f"classes.txt: {classes} classes" + ("" if classes == 200 else " (Mini-Kinetics has 200)"))
    if any(summary["skipped"].values()):
        click.echo(f"skipped entries, one per line: {out / P.SKIPPED_FILE}")
