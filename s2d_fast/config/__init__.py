"""Configuration: defaults from `defaults.py`, then a YAML file, then `KEY VALUE` pairs."""

from __future__ import annotations

import ast
import difflib
import importlib.resources
import os
from pathlib import Path

import yaml
from fvcore.common.config import CfgNode

from .checks import (
    ConfigError,
    assert_and_infer_cfg,
    learning_rates,
    num_candidates,
    process_batch_size,
    read_flip_label_map,
    uses_gpus,
)
from .defaults import CHOICES, get_defaults

__all__ = [
    "CHOICES", "CfgNode", "ConfigError", "all_keys", "assert_and_infer_cfg", "get_defaults", "learning_rates",
    "num_candidates", "process_batch_size",
    "load_config", "packaged_configs", "read_flip_label_map", "save_config", "uses_gpus",
]


def all_keys(cfg: CfgNode, prefix: str = "") -> list[str]:
    """Dotted names of every leaf key, in declaration order."""
    keys = []
    for name, value in cfg.items():
        full = f"{prefix}{name}"
        if isinstance(value, CfgNode):
            keys.extend(all_keys(value, full + "."))
        else:
            keys.append(full)
    return keys


def _unknown_key(key: str, cfg: CfgNode, where: str) -> ConfigError:
    valid = all_keys(cfg)
    near = difflib.get_close_matches(key, valid, n=3, cutoff=0.75)
    if not near:  # a typo in the section name still deserves the keys of the section it meant
        leaf = key.rsplit(".", 1)[-1]
        near = [k for k in valid if k.rsplit(".", 1)[-1] == leaf][:3]
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    return ConfigError(f"{where}unknown config key {key}{hint}")


def _type_name(value) -> str:
    return type(value).__name__


def _coerce(key: str, value, default, where: str):
    """`value` in the type of `default`, or a ConfigError naming the key and the type."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-5` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
        if isinstance(value, bool) and {"on", "off"} <= set(CHOICES.get(key, ())):
            return "on" if value else "off"  # an on/off switch written as True / False
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # a path or name that happens to look like a number
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return list(value)
    raise ConfigError(
        f"{where}config key {key} expects {_type_name(default)} (default {default!r}), "
        f"got {_type_name(value)} {value!r}"
    )


def _decode(text: str):
    """Command-line values are Python literals when they parse as one, else plain strings."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _set(cfg: CfgNode, key: str, value, where: str) -> None:
    node = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part) if isinstance(node, CfgNode) else None
        if not isinstance(child, CfgNode):
            raise _unknown_key(key, cfg, where)
        node = child
    leaf = parts[-1]
    if leaf not in node or isinstance(node[leaf], CfgNode):
        raise _unknown_key(key, cfg, where)
    node[leaf] = _coerce(key, value, node[leaf], where)


def _flatten(mapping: dict, prefix: str = "") -> list[tuple[str, object]]:
    items = []
    for name, value in mapping.items():
        if isinstance(value, dict):
            items.extend(_flatten(value, f"{prefix}{name}."))
        else:
            items.append((f"{prefix}{name}", value))
    return items


def _read_yaml(text: str, where: str) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of config keys at the top level")
    return data


def _merge_yaml(cfg: CfgNode, path: Path, seen: tuple[Path, ...] = ()) -> None:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: _BASE_ inheritance loops back to this file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = _read_yaml(path.read_text(), str(path))
    base = data.pop("_BASE_", None)
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"{path}: _BASE_ names the YAML file this one inherits; got {base!r}")
    if base:
        _merge_yaml(cfg, (path.parent / base), seen + (path,))
    for key, value in _flatten(data):
        _set(cfg, key, value, f"{path}: ")


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> list[tuple[str, object]]:
    if len(pairs) % 2:
        raise ConfigError(
            f"overrides come in KEY VALUE pairs; {pairs[-1]!r} has no value"
        )
    return [(pairs[i], _decode(pairs[i + 1])) for i in range(0, len(pairs), 2)]


def load_config(
    config_file: str | os.PathLike | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    saved: tuple[str, str] | None = None,
) -> CfgNode:
    """Defaults, then a config saved with a run (`saved`: its YAML text and where it comes from,
    e.g. a checkpoint), then `config_file` (with `_BASE_`), then `KEY VALUE` overrides; frozen."""
    cfg = get_defaults()
    if saved is not None:
        text, source = saved
        for key, value in _flatten(_read_yaml(text, source)):
            _set(cfg, key, value, f"{source} (the config it was trained with): ")
    if config_file:
        _merge_yaml(cfg, Path(config_file))
    for key, value in parse_overrides(overrides):
        _set(cfg, key, value, "command line: ")
    assert_and_infer_cfg(cfg)
    cfg.freeze()
    return cfg


def packaged_configs() -> Path:
    """The folder of the YAML recipes shipped with the package (the repository's `configs/`)."""
    return Path(str(importlib.resources.files("s2d_fast.configs")))


def save_config(cfg: CfgNode, path: str | os.PathLike) -> None:
    """Write the merged config as YAML that `load_config` reads back."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(cfg.dump())
