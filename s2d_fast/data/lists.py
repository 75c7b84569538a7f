"""List files: one video per line, TSN's `path num_frames label` or PySlowFast's and MMAction2's
`path label` (the path may contain spaces). The frame count a row lists is a hint that the
dataset checks against the video; the video's own count is used."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from s2d_fast.config import ConfigError

logger = logging.getLogger(__name__)


class ListFileError(ConfigError):
    """A list file that cannot be used; the message starts `file:line:`."""


@dataclass(frozen=True)
class VideoRecord:
    path: str  # relative to the dataset root (or absolute)
    num_frames: int | None  # as listed (None: a `path label` row); the video's own count wins
    label: int
    where: str = field(default="", compare=False)  # file:line of the row, for messages


@dataclass(frozen=True)
class RejectedRow:
    where: str  # file:line
    reason: str


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _parse_row(fields: list[str], line: str, where: str, num_classes: int | None, counted: bool) -> VideoRecord:
    """One row; `counted`: the file's rows are `path num_frames label` (else `path label`)."""
    if len(fields) < (3 if counted else 2):
        form = "`path num_frames label`" if counted else "`path label`"
        raise ListFileError(f"{where}: expected {form} as the file's first row, got {line.strip()!r}")
    if not (_is_int(fields[-1]) and (not counted or _is_int(fields[-2]))):
        what = f"num_frames and label must be integers, got {fields[-2]!r} {fields[-1]!r}" if counted else \
            f"the label must be an integer, got {fields[-1]!r}"
        raise ListFileError(f"{where}: {what}")
    label = int(fields[-1])
    num_frames = int(fields[-2]) if counted else None
    if num_frames is not None and num_frames < 1:
        raise ListFileError(f"{where}: num_frames must be at least 1, got {num_frames}")
    if label < 0:
        raise ListFileError(f"{where}: label must not be negative, got {label}")
    if num_classes is not None and label >= num_classes:
        raise ListFileError(f"{where}: label {label} is not below the {num_classes} classes (DATA.NUM_CLASS)")
    return VideoRecord(" ".join(fields[:-2] if counted else fields[:-1]), num_frames, label, where)


def read_list(
    path: str | os.PathLike, num_classes: int | None = None, on_bad: str = "error"
) -> tuple[list[VideoRecord], list[RejectedRow]]:
    """The rows of a list file, and the malformed ones left out.

    A malformed row raises ListFileError `file:line: why`; with `on_bad="skip"` it is logged
    (the same message) and returned among the rejected rows instead, so one bad row does not
    stop a long run, and evaluation can still count it. A label beyond `num_classes` always
    raises: the list and DATA.NUM_CLASS disagree, which no skipping mends.
    """
    records, rejected = [], []
    counted = None  # the first row says which form the file has
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if counted is None:
                counted = len(fields) >= 3 and _is_int(fields[-2])
            where = f"{path}:{lineno}"
            try:
                records.append(_parse_row(fields, line, where, num_classes, counted))
            except ListFileError as err:
                if on_bad != "skip" or "is not below the" in str(err):
                    raise
                logger.warning("skipping a list row: %s", err)
                rejected.append(RejectedRow(where, str(err)[len(where) + 2:]))
    if rejected:
        logger.warning("%s: skipped %d malformed row(s) of %d", path, len(rejected), len(rejected) + len(records))
    if not records:
        raise ListFileError(f"{path}: the list file names no videos")
    return records, rejected


def read_list_file(
    path: str | os.PathLike, num_classes: int | None = None, on_bad: str = "error"
) -> list[VideoRecord]:
    """The well-formed rows of a list file (see `read_list`)."""
    return read_list(path, num_classes, on_bad)[0]
