"""Dataset preparation: JPEG frames from videos, TSN list files from official annotations.

Frame extraction is resumable: each video is written to `<name>.partial/` and renamed to
`<name>/` when complete, so a finished folder is skipped and a partial one (an interrupted run)
is redone.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
from PIL import Image
from tqdm import tqdm

from s2d_fast.errors import UserError

from .decoders import TSN_FRAME_TEMPLATE, frame_to_rgb, frames_at

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov")
PARTIAL = ".partial"


def extract_one(job: tuple) -> tuple[str, str, str]:
    """Frames of one video as JPEGs; returns (name, status, detail), status done|skipped|failed."""
    video, name, out_root, template, short_side, quality = job
    final, partial = Path(out_root) / name, Path(out_root) / (name + PARTIAL)
    if final.is_dir():
        return name, "skipped", "already extracted"
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted run: redo it
    partial.mkdir(parents=True)
    try:
        count = 0
        with av.open(video) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            stream.thread_count = 1  # the pool runs one video per process
            for frame in container.decode(stream):
                count += 1
                Image.fromarray(frame_to_rgb(frame, short_side)).save(partial / template.format(count), quality=quality)
        if count == 0:
            raise ValueError("no frames could be decoded")
    except (av.FFmpegError, OSError, ValueError) as err:
        shutil.rmtree(partial, ignore_errors=True)
        return name, "failed", f"{video}: {err or type(err).__name__}"
    partial.rename(final)
    return name, "done", str(count)


def extract_frames(video_dir, out_dir, *, template: str = TSN_FRAME_TEMPLATE, short_side: int = 0,
                   quality: int = 95, workers: int = 0, progress: bool = True) -> dict:
    """Extract every video under `video_dir` into `out_dir/<its sub-folders>/<video stem>/`; returns the summary
    `{"done": [...], "skipped": [...], "failed": [{"video", "reason"}]}`."""
    videos = sorted(p for p in Path(video_dir).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    # OUT_DIR mirrors VIDEO_DIR's sub-folders (Kinetics' label folders, which `prepare lists`
    # reads), so videos of the same name in different folders never meet.
    jobs = [(str(v), v.relative_to(Path(video_dir)).with_suffix("").as_posix(), str(out_dir), template, short_side, quality)
            for v in videos]
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


LISTS_SKIPPED_FILE = "lists_skipped.txt"  # what `prepare lists` left out, one entry per line


def write_list(rows, root: Path, out: Path, template: str, skipped: Counter, left_out: list[str]) -> int:
    """Write `path num_frames label` for each (relative path, label) that exists under `root`
    (a frame folder or a video file); what is missing or empty is counted in `skipped` and
    named in `left_out` (`list: path: reason` lines)."""
    lines = []
    for rel, label in tqdm(rows, desc=out.name, unit="video", leave=False):
        path = root / rel
        reason = None
        if not path.exists():
            reason = "missing"
        else:
            frames = frames_at(path, template)
            if frames == 0:
                reason = "no frames"
        if reason:
            skipped[reason] += 1
            left_out.append(f"{out.name}: {rel}: {reason}\n")
            continue
        lines.append(f"{rel} {frames} {label}\n")
    out.write_text("".join(lines))
    return len(lines)


def _resolve(root: Path, stem: str) -> str:
    """`stem` as a frame folder, else as a video file with any known suffix (default .mp4). A
    class folder may also be written with underscores for spaces (MMAction2's download script
    renames them so)."""
    folder, _, name = stem.rpartition("/")
    for candidate in dict.fromkeys([stem] + ([f"{folder.replace(' ', '_')}/{name}"] if " " in folder else [])):
        if (root / candidate).is_dir():
            return candidate
        for suffix in VIDEO_SUFFIXES:
            if (root / (candidate + suffix)).is_file():
                return candidate + suffix
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


# --- Mini-Kinetics: AR-Net's split files --------------------------------------------------------
#
# AR-Net (github.com/mengyuest/AR-Net, ops/dataset_config.py `return_minik`) reads
# `mini_train_videofolder.txt` / `mini_val_videofolder.txt`, one clip per line as
# `images/<train|val>/<class name>/<youtube_id>_<start:06d>_<end:06d> <num_frames> <label>`, the
# class name holding spaces (ops/dataset.py joins all fields but the last two). Its labels 0-199
# number the 200 class names in sorted order (the same author's AdaFuse ships that file and the
# class list, data/kinetics/mini_val_videofolder.txt and minik_classInd.txt). Also read: the same
# rows with `;` between the fields (AdaFuse's mini_val.txt), and plain lists of one YouTube id
# (or clip name) per line, Mini-Kinetics-200's `train_ytid_list.txt` / `val_ytid_list.txt`
# (github.com/s9xie/Mini-Kinetics-200), whose classes come from the official Kinetics CSVs.

CLIP_NAME = re.compile(r"(?P<ytid>[A-Za-z0-9_-]{11})(?:_(?P<start>\d+)_(?P<end>\d+))?")
ARNET, PLAIN = "AR-Net `path num_frames label`", "plain YouTube-id list"
MISSING = "no video or frame folder under the root"
NO_FRAMES = "no frames"
NOT_IN_CSV = "YouTube id not in the Kinetics CSVs"
REPEATED = "repeated in the split file"
SKIPPED_FILE = "mini_kinetics_skipped.txt"


class SplitFileError(UserError, ValueError):
    """A malformed line of a split file; the message starts with `file:line:`."""


@dataclass(frozen=True)
class SplitEntry:
    where: str  # file:line
    ytid: str
    clip: str  # the clip name as the split gives it: <ytid>_<start>_<end>, or just <ytid>
    cls: str | None = None  # class name (AR-Net's files; plain lists take it from the CSVs)
    label: int | None = None  # AR-Net's label


def _clip_name(name: str) -> re.Match | None:
    for suffix in VIDEO_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return CLIP_NAME.fullmatch(name)


def _split_line(line: str, where: str) -> tuple[str, SplitEntry]:
    fields = line.split(";") if ";" in line else line.rsplit(None, 2)
    fields = [f.strip() for f in fields]
    if len(fields) == 1:
        match = _clip_name(fields[0])
        if not match:
            raise SplitFileError(f"{where}: {fields[0]!r} is not a YouTube id (11 characters of "
                                 "A-Z a-z 0-9 _ -) nor <youtube_id>_<start>_<end>")
        return PLAIN, SplitEntry(where, match["ytid"], match[0])
    if len(fields) != 3:
        raise SplitFileError(f"{where}: expected `path num_frames label` (AR-Net) or one YouTube id, "
                             f"got {len(fields)} fields: {line!r}")
    path, frames, label = fields
    if not all(f.isascii() and f.isdigit() for f in (frames, label)):
        raise SplitFileError(f"{where}: num_frames and label must be non-negative integers, "
                             f"got {frames!r} {label!r}")
    parts = [p for p in path.split("/") if p]
    match = _clip_name(parts[-1]) if parts else None
    if not match or len(parts) < 2:
        raise SplitFileError(f"{where}: expected a path ending in <class name>/<youtube_id>_<start>_<end>, "
                             f"got {path!r}")
    return ARNET, SplitEntry(where, match["ytid"], match[0], parts[-2], int(label))


def read_split(path: Path) -> tuple[str, list[SplitEntry]]:
    """The format (ARNET or PLAIN) and the entries of a Mini-Kinetics split file, in file order.
    A line that fits neither format, or not the format of the file's first line, raises
    SplitFileError `file:line: why`."""
    fmt, first, entries = None, None, []
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            kind, entry = _split_line(line.strip(), where)
            if fmt is None:
                fmt, first = kind, where
            elif kind != fmt:
                raise SplitFileError(f"{where}: a line in the {kind} format, but the file's first line "
                                     f"({first}) is in the {fmt} format")
            entries.append(entry)
    if not entries:
        raise SplitFileError(f"{path}: the split file names no videos")
    return fmt, entries


def kinetics_csv_clips(paths) -> dict[str, tuple[str, str]]:
    """YouTube id -> (class name, clip name `<id>_<start:06d>_<end:06d>`) from official Kinetics
    CSVs (label,youtube_id,time_start,time_end,...); the first CSV naming an id wins."""
    clips: dict[str, tuple[str, str]] = {}
    for path in paths:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if not {"label", "youtube_id", "time_start", "time_end"} <= set(reader.fieldnames or ()):
                raise SplitFileError(f"{path}: not an official Kinetics CSV "
                                     "(label,youtube_id,time_start,time_end,... columns)")
            for e in reader:
                clip = f"{e['youtube_id']}_{int(float(e['time_start'])):06d}_{int(float(e['time_end'])):06d}"
                clips.setdefault(e["youtube_id"], (e["label"], clip))
    return clips


def index_clips(root: Path, template: str) -> dict[str, list[str]]:
    """YouTube id -> the paths (relative to `root`, `/`-separated) of the video files and frame
    folders under `root`, at any depth, named `<youtube_id>` or `<youtube_id>_<start>_<end>`.

    A folder with such a name is a frame folder (not descended into) when it has timestamps or
    holds the first frame `template.format(1)`; other folders are searched, so a folder that only
    looks like an id (`kinetics400/`) still has its clips found. Interrupted extractions
    (`*.partial`) and hidden entries are ignored; symlinked folders are followed."""
    first = template.format(1)
    found: dict[str, list[str]] = {}
    searched: set[tuple[int, int]] = set()  # (device, inode): a symlink loop is searched once
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in searched:
                continue
            searched.add((st.st_dev, st.st_ino))
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                if entry.name.endswith(PARTIAL):
                    continue
                match = CLIP_NAME.fullmatch(entry.name)
                if match and (match["start"] is not None or os.path.isfile(os.path.join(entry.path, first))):
                    found.setdefault(match["ytid"], []).append(Path(entry.path).relative_to(root).as_posix())
                else:
                    stack.append(entry.path)
            elif Path(entry.name).suffix.lower() in VIDEO_SUFFIXES:
                match = _clip_name(entry.name)
                if match:
                    found.setdefault(match["ytid"], []).append(Path(entry.path).relative_to(root).as_posix())
    return found


def _pick(candidates: list[str], clip: str, cls: str) -> str:
    """The candidate named exactly `clip` (timestamps included), then one inside a folder named
    after the class (spaces or underscores), then the first by path."""
    def rank(rel: str):
        parent, _, name = rel.rpartition("/")
        return _clip_name(name)[0] != clip, parent.rpartition("/")[2].replace("_", " ") != cls, rel

    return min(candidates, key=rank)


def _label_map(entries: list[SplitEntry]) -> list[str]:
    """Class names by label. With AR-Net's files, the labels they give (checked consistent:
    one label per class and one class per label, 0..K-1 all used); with plain id lists only,
    the class names sorted, which is the order AR-Net's labels follow."""
    by_class: dict[str, tuple[int, str]] = {}
    by_label: dict[int, tuple[str, str]] = {}
    for e in entries:
        if e.label is None:
            continue
        cls, where = by_label.setdefault(e.label, (e.cls, e.where))
        if cls != e.cls:
            raise SplitFileError(f"{e.where}: label {e.label} is given to class {e.cls!r}, "
                                 f"but to {cls!r} at {where}")
        label, where = by_class.setdefault(e.cls, (e.label, e.where))
        if label != e.label:
            raise SplitFileError(f"{e.where}: class {e.cls!r} has label {e.label}, but {label} at {where}")
    if not by_label:
        return sorted({e.cls for e in entries if e.cls is not None})
    unused = sorted(set(range(max(by_label) + 1)) - set(by_label))
    if unused:
        raise SplitFileError(f"the split files give labels up to {max(by_label)} but none of "
                             f"{', '.join(map(str, unused[:10]))}: labels must number the classes 0..K-1")
    for e in entries:
        if e.label is None and e.cls is not None and e.cls not in by_class:
            raise SplitFileError(f"{e.where}: class {e.cls!r} (from the Kinetics CSVs) has no label "
                                 "in the AR-Net split files")
    return [by_label[i][0] for i in range(len(by_label))]


def mini_kinetics_lists(root: Path, splits, out: Path, *, csvs=(), template: str = TSN_FRAME_TEMPLATE,
                        progress: bool = True) -> dict:
    """Write the TSN list files of Mini-Kinetics from its split files.

    `splits`: (split file, list file name) pairs, e.g. train then val. Each entry of a split file
    is looked up under `root` by YouTube id (index_clips); the list files name the videos or frame
    folders found, relative to `root`, with their frame counts (counted here: AR-Net's are for its
    own extraction) and the labels of `_label_map`, in split-file order. `classes.txt` gets the
    class names by label and `mini_kinetics_skipped.txt` one `file:line: clip: reason` line per
    entry left out. Returns `{"classes", "formats", "entries", "written", "skipped"}`, the last
    four keyed by list file name (skipped: a Counter of reasons).
    """
    parsed = [(name, *read_split(Path(split))) for split, name in splits]
    plain = [str(split) for (split, _), (_, fmt, _) in zip(splits, parsed) if fmt == PLAIN]
    if plain and not csvs:
        raise SplitFileError(f"{', '.join(plain)}: a plain YouTube-id list names no classes; "
                             "give the official Kinetics CSVs (--kinetics-train/--kinetics-val)")
    known = kinetics_csv_clips(csvs) if plain else {}

    def with_class(e: SplitEntry) -> SplitEntry:
        if e.cls is not None or e.ytid not in known:
            return e
        cls, clip = known[e.ytid]
        return SplitEntry(e.where, e.ytid, clip if e.clip == e.ytid else e.clip, cls)

    parsed = [(name, fmt, [with_class(e) for e in entries]) for name, fmt, entries in parsed]
    classes = _label_map([e for *_, entries in parsed for e in entries])
    index = {c: i for i, c in enumerate(classes)}
    on_disk = index_clips(root, template)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"classes": classes, "formats": {}, "entries": {}, "written": {}, "skipped": {}}
    skipped_lines: list[str] = []
    for name, fmt, entries in parsed:
        lines, seen, skipped = [], {}, Counter()
        for e in tqdm(entries, desc=name, unit="video", leave=False, disable=not progress):
            first = seen.setdefault(e.ytid, e.where)
            reason = detail = None
            if first != e.where:
                reason, detail = REPEATED, f"{REPEATED} (first at {first})"
            elif e.cls is None:
                reason = detail = NOT_IN_CSV
            elif e.ytid not in on_disk:
                reason = detail = MISSING
            else:
                rel = _pick(on_disk[e.ytid], e.clip, e.cls)
                frames = frames_at(root / rel, template)
                if frames:
                    lines.append(f"{rel} {frames} {index[e.cls]}\n")
                else:
                    reason, detail = NO_FRAMES, f"{NO_FRAMES} in {rel}"
            if reason:
                skipped[reason] += 1
                skipped_lines.append(f"{e.where}: {e.clip}: {detail}\n")
        (out / name).write_text("".join(lines))
        summary["formats"][name] = fmt
        summary["entries"][name] = len(entries)
        summary["written"][name] = len(lines)
        summary["skipped"][name] = skipped
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    (out / SKIPPED_FILE).write_text("".join(skipped_lines))
    return summary
