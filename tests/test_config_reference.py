"""The configuration reference in README.md is generated from defaults.py and kept current."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from s2d_fast.config import CHOICES as _CHOICES
from s2d_fast.config import all_keys, get_defaults
from s2d_fast.config import defaults as defaults_module
from s2d_fast.config.reference import (
    END_MARKER,
    START_MARKER,
    WRITE_COMMAND,
    config_reference,
    declared_comments,
    main,
    marked_section,
)

README = Path(__file__).resolve().parents[1] / "README.md"
ROW = re.compile(r"^\| `(?P<key>[^`]+)` \| (?P<default>.*?) \| (?P<description>.*) \|$")


def _rows(reference: str) -> list[dict]:
    return [m.groupdict() for line in reference.splitlines() if (m := ROW.match(line))]


def _unescape(cell: str) -> str:
    return cell.replace("\\|", "|")


def _code_span(cell: str) -> str:
    cell = _unescape(cell)
    fence = re.match(r"`+", cell).group()
    assert cell.endswith(fence), cell
    inner = cell[len(fence):-len(fence)]
    return inner[1:-1] if inner.startswith(" ") and inner.endswith(" ") and inner.strip() else inner


def _value(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def test_readme_reference_is_current():
    text = README.read_text()
    assert text.count(START_MARKER) == 1 and text.count(END_MARKER) == 1, (
        f"README.md needs the markers {START_MARKER} and {END_MARKER} once each"
    )
    assert marked_section(text, README) == config_reference(), (
        f"README.md's configuration reference is out of date with s2d_fast/config/defaults.py; "
        f"run `{WRITE_COMMAND}`"
    )


def test_every_key_once_with_its_default_and_comment():
    cfg = get_defaults()
    rows = _rows(config_reference())
    by_key = {}
    for row in rows:
        assert row["key"] not in by_key, f"{row['key']} appears twice"
        by_key[row["key"]] = row
    keys = all_keys(cfg)
    assert list(by_key) == keys  # every key, once, in declaration order
    source = Path(defaults_module.__file__).read_text().splitlines()
    for key in keys:
        row = by_key[key]
        assert ast.literal_eval(_code_span(row["default"])) == _value(cfg, key), key
        # The comment as test_config.py::test_every_key_has_a_comment finds it.
        line = next(line for line in source if line.startswith(f"_C.{key} ="))
        comment = line.split("  # ", 1)[1].strip()
        assert _unescape(row["description"]).startswith(comment), key
        if key in _CHOICES:
            for choice in _CHOICES[key]:
                assert f"`{choice}`" in row["description"], (key, choice)


def test_sections_in_declaration_order():
    reference = config_reference()
    headings = re.findall(r"^#### (.+)$", reference, flags=re.M)
    sections = list(dict.fromkeys(k.split(".")[0] for k in all_keys(get_defaults()) if "." in k))
    assert headings == ["Top level"] + sections
    for heading in headings:  # one table per section
        assert reference.count(f"#### {heading}\n\n| Key | Default | Description |\n| --- | --- | --- |\n") == 1


def test_pipes_are_escaped_and_multiline_declarations_are_read():
    for row in _rows(config_reference()):
        for cell in row.values():
            assert "|" not in cell.replace("\\|", ""), cell
    source = (
        '_C = CfgNode()\n'
        '_C.A = CfgNode()\n'
        '_C.A.LIST = [  # first | part\n'
        '    1,\n'
        '    2,\n'
        ']  # second part\n'
        '_C.A.PLAIN = "x # not a comment"  # the comment\n'
        '_C.A.NONE = 3\n'
    )
    assert declared_comments(source) == {
        "A": "", "A.LIST": "first | part second part", "A.PLAIN": "the comment", "A.NONE": "",
    }


def test_write_without_markers_names_the_file(tmp_path, capsys):
    path = tmp_path / "NOTES.md"
    path.write_text("# Notes\n\nno markers here\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["--write", str(path)])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert str(path) in err and START_MARKER in err
    assert path.read_text() == "# Notes\n\nno markers here\n"
    missing = tmp_path / "absent.md"
    with pytest.raises(SystemExit):
        main(["--write", str(missing)])
    assert str(missing) in capsys.readouterr().err


def test_write_replaces_only_the_marked_section(tmp_path):
    path = tmp_path / "DOC.md"
    before = "# Title\r\n\r\nkept | text\n\n<details>\n\n"
    after = "\n\n</details>\n\n## After\n\nalso kept\n"
    path.write_bytes((before + START_MARKER + "\nstale\ncontent\n" + END_MARKER + after).encode())
    assert main(["--write", str(path)]) == 0
    text = path.read_bytes().decode()
    assert text == before + START_MARKER + "\n\n" + config_reference() + "\n" + END_MARKER + after
    assert marked_section(text, path) == config_reference()
    assert main(["--write", str(path)]) == 0  # a second write changes nothing
    assert path.read_bytes().decode() == text


def test_module_prints_the_reference():
    result = subprocess.run([sys.executable, "-m", "s2d_fast.config.reference"], capture_output=True, text=True,
                            check=True, cwd=README.parent)
    assert result.stdout == config_reference()
