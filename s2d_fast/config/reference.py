"""The configuration reference: every key of `defaults.py` as Markdown tables, generated.

Defaults come from the default CfgNode, descriptions from the `# comment` on each key's
declaration in `defaults.py` (read with `ast` and `tokenize`, so a declaration may span several
lines), allowed values from its `CHOICES`.

    python -m s2d_fast.config.reference                    # print the reference
    python -m s2d_fast.config.reference --write README.md  # refresh it between the markers
"""

from __future__ import annotations

import argparse
import ast
import io
import sys
import tokenize
from pathlib import Path

from . import defaults as _defaults_module
from . import CHOICES, all_keys, get_defaults
from .checks import value_of

__all__ = ["config_reference", "declared_comments", "format_default", "marked_section", "replace_marked_section",
           "START_MARKER", "END_MARKER", "WRITE_COMMAND", "main"]

START_MARKER = "<!-- config-reference:start -->"
END_MARKER = "<!-- config-reference:end -->"
WRITE_COMMAND = "python -m s2d_fast.config.reference --write README.md"
TOP_LEVEL = "Top level"  # the heading of the keys that belong to no section


def _dotted(target: ast.expr) -> str | None:
    """`X.Y` for the assignment target `_C.X.Y`, else None."""
    parts = []
    while isinstance(target, ast.Attribute):
        parts.append(target.attr)
        target = target.value
    if isinstance(target, ast.Name) and target.id == "_C" and parts:
        return ".".join(reversed(parts))
    return None


def declared_comments(source: str) -> dict[str, str]:
    """`{dotted key: comment}` for every `_C.X.Y = value  # comment` assignment in `source`.

    The comment is every `#` comment on the lines the assignment spans, joined by spaces (a
    declaration written over several lines may carry its comment on any of them). A key assigned
    more than once takes its last commented declaration.
    """
    comments: dict[int, list[str]] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments.setdefault(tok.start[0], []).append(tok.string.lstrip("#").strip())
    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        text = " ".join(
            c for line in range(node.lineno, (node.end_lineno or node.lineno) + 1) for c in comments.get(line, ()) if c
        )
        for target in targets:
            key = _dotted(target)
            if key is not None and (text or key not in found):
                found[key] = text
    return found


def _defaults_source() -> str:
    with tokenize.open(_defaults_module.__file__) as f:  # honours a coding cookie
        return f.read()


def format_default(value) -> str:
    """A default as the Python literal a `KEY VALUE` override would spell it."""
    if isinstance(value, str):
        escaped = value.encode("unicode_escape").decode("ascii")  # backslashes, newlines, non-ASCII
        return '"' + escaped.replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(format_default(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(format_default(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def _cell(text: str, collapse: bool = True) -> str:
    """Table cell text: pipes escaped (GFM needs that inside code spans too); `collapse` puts
    a description on one line."""
    if collapse:
        text = " ".join(text.split())
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    """`text` as a code span, fenced with enough backticks for whatever it holds."""
    fence = "`"
    while fence in text:
        fence += "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def config_reference() -> str:
    """Markdown: one table (Key | Default | Description) per top-level section of the defaults,
    keys in declaration order; top-level keys that belong to no section come first."""
    cfg = get_defaults()
    comments = declared_comments(_defaults_source())
    sections: dict[str, list[str]] = {}
    for key in all_keys(cfg):
        section = key.split(".", 1)[0] if "." in key else TOP_LEVEL
        sections.setdefault(section, []).append(key)
    if TOP_LEVEL in sections:  # the keys of no section come first, wherever they are declared
        sections = {TOP_LEVEL: sections.pop(TOP_LEVEL), **sections}
    out = []
    for section, keys in sections.items():
        out += [f"#### {section}", "", "| Key | Default | Description |", "| --- | --- | --- |"]
        for key in keys:
            description = comments.get(key, "")
            choices = CHOICES.get(key)
            if choices:
                allowed = "one of: " + ", ".join(_code(c) for c in choices)
                description = f"{description}; {allowed}" if description else allowed.capitalize()
            default = _code(format_default(value_of(cfg, key)))
            out.append(f"| {_cell(_code(key))} | {_cell(default, collapse=False)} | {_cell(description)} |")
        out.append("")
    return "\n".join(out)


def _marker_positions(text: str, path) -> tuple[int, int]:
    """Where the section between the markers starts and ends in `text`; errors name `path`."""
    starts, ends = text.count(START_MARKER), text.count(END_MARKER)
    if starts == 0 or ends == 0:
        missing = " and ".join(m for m, n in ((START_MARKER, starts), (END_MARKER, ends)) if n == 0)
        raise ValueError(f"{path}: no {missing} marker; add {START_MARKER} and {END_MARKER} "
                         "where the configuration reference should go")
    if starts > 1 or ends > 1:
        raise ValueError(f"{path}: the markers {START_MARKER} and {END_MARKER} must appear once each "
                         f"(found {starts} and {ends})")
    begin = text.index(START_MARKER) + len(START_MARKER)
    end = text.index(END_MARKER)
    if end < begin:
        raise ValueError(f"{path}: {END_MARKER} comes before {START_MARKER}")
    return begin, end


def marked_section(text: str, path="the text") -> str:
    """What `replace_marked_section` put between the markers of `text` (without the blank lines
    that frame it)."""
    begin, end = _marker_positions(text, path)
    section = text[begin:end]
    if section.startswith("\n\n"):
        section = section[2:]
    if section.endswith("\n\n"):
        section = section[:-1]
    return section


def replace_marked_section(text: str, content: str, path="the text") -> str:
    """`text` with whatever lies between the markers replaced by `content`, framed by blank
    lines (so Markdown reads it as blocks of its own); the rest is left byte for byte."""
    begin, end = _marker_positions(text, path)
    if not content.endswith("\n"):
        content += "\n"
    return text[:begin] + "\n\n" + content + "\n" + text[end:]


def write_reference(path: str | Path) -> bool:
    """Refresh the reference between the markers of the file `path`; True if it changed."""
    path = Path(path)
    try:
        with open(path, newline="") as f:  # keep the file's own line endings
            text = f.read()
    except OSError as err:
        raise ValueError(f"{path}: cannot read: {err.strerror or err}") from None
    new = replace_marked_section(text, config_reference(), path)
    if new == text:
        return False
    with open(path, "w", newline="") as f:
        f.write(new)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m s2d_fast.config.reference",
        description="Print the configuration reference generated from s2d_fast/config/defaults.py, "
                    f"or write it between the {START_MARKER} and {END_MARKER} markers of a file.",
    )
    parser.add_argument("--write", metavar="FILE", help="Replace the text between the markers of FILE.")
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(config_reference())
        return 0
    try:
        changed = write_reference(args.write)
    except ValueError as err:
        parser.exit(1, f"error: {err}\n")
    print(f"{'updated' if changed else 'already up to date'}: {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
