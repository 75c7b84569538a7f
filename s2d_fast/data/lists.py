"""TSN list files: one video per line, `path num_frames label` (the path may contain spaces)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from s2d_fast.config import ConfigError

logger = logging.getLogger(__name__)


class ListFileError(ConfigError):
    """A list file that cannot be used; the message starts `file:line:`."""


@dataclass(frozen=True)
class VideoRecord:
    path: str  # relative to the dataset root (or absolute)
    num_frames: int  # as listed: a hint, the decoder has the last word
    label: int


def _parse_row(fields: list[str], line: str, where: str, num_classes: int | None) -> VideoRecord:
    if len(fields) < 3:
        raise ListFileError(f"{where}: expected `path num_frames label`, got {line.strip()!r}")
    try:
        num_frames, label = int(fields[-2]), int(fields[-1])
    except ValueError:
        raise ListFileError(
            f"{where}: num_frames and label must be integers, got {fields[-2]!r} {fields[-1]!r}"
        ) from None
    if num_frames < 1:
        raise ListFileError(f"{where}: num_frames must be at least 1, got {num_frames}")
    if label < 0:
        raise ListFileError(f"{where}: label must not be negative, got {label}")
    if num_classes is not None and label >= num_classes:
        raise ListFileError(f"{where}: label {label} is not below the {num_classes} classes (DATA.NUM_CLASS)")
    return VideoRecord(" ".join(fields[:-2]), num_frames, label)


def read_list_file(
    path: str | os.PathLike, num_classes: int | None = None, on_bad: str = "error"
) -> list[VideoRecord]:
    """Rows `path num_frames label` of a TSN list file (a path may contain spaces).

    A malformed row raises ListFileError `file:line: why`; with `on_bad="skip"` it is logged
    (the same message) and left out instead, so one bad row does not stop a long run.
    """
    records = []
    skipped = 0
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                records.append(_parse_row(fields, line, f"{path}:{lineno}", num_classes))
            except ListFileError as err:
                if on_bad != "skip":
                    raise
                logger.warning("skipping a list row: %s", err)
                skipped += 1
    if skipped:
        logger.warning("%s: skipped %d malformed row(s) of %d", path, skipped, skipped + len(records))
    if not records:
        raise ListFileError(f"{path}: the list file names no videos")
    return records
