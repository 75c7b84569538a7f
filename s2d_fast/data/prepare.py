"""Dataset preparation: JPEG frames from videos, TSN list files from official annotations.

Frame extraction is resumable: each video is written to `<name>.partial/` and renamed to
`<name>/` when complete, so a finished folder is skipped and a partial one (an interrupted run)
is redone.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
from tqdm import tqdm

from s2d_fast.data.transforms import scaled_size

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov")
PARTIAL = ".partial"


def extract_one(job: tuple) -> tuple[str, str, str]:
    """Frames of one video as JPEGs; returns (name, status, detail), status done|skipped|failed."""
    video, out_root, template, short_side, quality = job
    name = Path(video).stem
    final, partial = Path(out_root) / name, Path(out_root) / (name + PARTIAL)
    if final.is_dir():
        return name, "skipped", "already extracted"
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted run: redo it
    partial.mkdir(parents=True)
    try:
        count = 0
        with av.open(video) as container:
            stream = container.streams.video[0]
            stream.thread_count = 1  # the pool runs one video per process
            for frame in container.decode(stream):
                size = scaled_size(frame.width, frame.height, short_side) if short_side else (frame.width, frame.height)
                image = frame.to_image(width=size[0], height=size[1])
                count += 1
                image.save(partial / template.format(count), quality=quality)
        if count == 0:
            raise ValueError("no frames")
    except (av.FFmpegError, OSError, ValueError, IndexError) as err:
        shutil.rmtree(partial, ignore_errors=True)
        return name, "failed", f"{video}: {err or type(err).__name__}"
    partial.rename(final)
    return name, "done", str(count)


def extract_frames(video_dir, out_dir, *, template: str = "img_{:05d}.jpg", short_side: int = 0,
                   quality: int = 95, workers: int = 0, progress: bool = True) -> dict:
    """Extract every video under `video_dir` into `out_dir/<video stem>/`; returns the summary
    `{"done": [...], "skipped": [...], "failed": [{"video", "reason"}]}`."""
    videos = sorted(str(p) for p in Path(video_dir).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    jobs = [(v, str(out_dir), template, short_side, quality) for v in videos]
    summary: dict = {"done": [], "skipped": [], "failed": []}
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    with tqdm(total=len(jobs), desc="frames", unit="video", disable=not progress) as bar:
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                results = list(_track(pool.map(extract_one, jobs, chunksize=4), bar))
        else:
            results = list(_track(map(extract_one, jobs), bar))
    for name, status, detail in results:
        summary[status].append({"video": name, "reason": detail} if status == "failed" else name)
    return summary


def _track(results, bar):
    for result in results:
        bar.update()
        yield result


def count_frames(folder: Path, template: str) -> int:
    prefix, _, rest = template.partition("{")
    suffix = rest.partition("}")[2]
    return sum(1 for n in os.listdir(folder) if n.startswith(prefix) and n.endswith(suffix))


def probe_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(video=0) if packet.size)


def write_list(rows, root: Path, out: Path, template: str, skipped: Counter) -> int:
    """Write `path num_frames label` for each (relative path, label) that exists under `root`
    (a frame folder or a video file); what is missing or empty is counted in `skipped`."""
    lines = []
    for rel, label in tqdm(rows, desc=out.name, unit="video", leave=False):
        path = root / rel
        if path.is_dir():
            frames = count_frames(path, template)
        elif path.is_file():
            try:
                frames = probe_frames(path)
            except (av.FFmpegError, OSError, ValueError):
                frames = 0
        else:
            skipped["missing"] += 1
            continue
        if frames == 0:
            skipped["no frames"] += 1
            continue
        lines.append(f"{rel} {frames} {label}\n")
    out.write_text("".join(lines))
    return len(lines)


def _resolve(root: Path, stem: str) -> str:
    """`stem` as a frame folder, else as a video file with any known suffix (default .mp4)."""
    if (root / stem).is_dir():
        return stem
    for suffix in VIDEO_SUFFIXES:
        if (root / (stem + suffix)).is_file():
            return stem + suffix
    return stem


def kinetics_rows(csv_path: Path, root: Path, classes: list[str] | None) -> tuple[list, list[str]]:
    """Rows of an official Kinetics CSV (label,youtube_id,time_start,time_end,split) as
    `label/<id>_<start>_<end>` (the layout of the official download scripts) and class index."""
    with open(csv_path, newline="") as f:
        entries = list(csv.DictReader(f))
    classes = classes or sorted({e["label"] for e in entries})
    index = {c: i for i, c in enumerate(classes)}
    rows = []
    for e in entries:
        if e["label"] not in index:
            continue
        stem = f"{e['label']}/{e['youtube_id']}_{int(float(e['time_start'])):06d}_{int(float(e['time_end'])):06d}"
        rows.append((_resolve(root, stem), index[e["label"]]))
    return rows, classes


def something_v1_rows(csv_path: Path, labels_path: Path) -> tuple[list, list[str]]:
    """`id;label` rows of Something-Something V1 and its labels file (one class per line)."""
    classes = [line.strip() for line in open(labels_path) if line.strip()]
    index = {c: i for i, c in enumerate(classes)}
    rows = []
    with open(csv_path) as f:
        for line in f:
            if line.strip():
                video, label = line.strip().split(";", 1)
                rows.append((video, index[label]))
    return rows, classes


def something_v2_rows(json_path: Path, labels_path: Path) -> tuple[list, list[str]]:
    """Something-Something V2's JSON: classes from labels.json, labels from each template
    with its brackets removed (as the official evaluation does)."""
    labels = json.loads(Path(labels_path).read_text())
    classes = [name for name, _ in sorted(labels.items(), key=lambda kv: int(kv[1]))]
    rows = [(e["id"], int(labels[e["template"].replace("[", "").replace("]", "")]))
            for e in json.loads(Path(json_path).read_text())]
    return rows, classes


def split_ids(path: Path) -> set[str]:
    """YouTube ids of a split file: the first field of each line, any folder or suffix removed
    (AR-Net's files list `id_start_end` stems)."""
    ids = set()
    for line in open(path):
        if line.strip():
            stem = Path(line.split()[0]).name.split(".")[0]
            ids.add(stem[:11])  # YouTube ids are 11 characters
    return ids


def filter_rows(rows: list, ids: set[str]) -> list:
    return [(rel, label) for rel, label in rows if Path(rel).name[:11] in ids]


def class_of(rel: str) -> str:
    return rel.split("/", 1)[0]
