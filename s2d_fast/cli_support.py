"""What every command of `s2d-fast` shares: reading a config from the paper's positional form,
and showing a user's mistake as one line (`UserErrorCommand`).

The commands themselves live beside what they drive (`cli.py`, `data/commands.py`, `bench/`);
they import this module, and `cli.py` imports them, never the reverse.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from s2d_fast.checkpoint import stored_config
from s2d_fast.config import load_config, packaged_configs
from s2d_fast.errors import UserError

# The exceptions a user can fix: the CLI prints their message alone. FileNotFoundError and
# FileExistsError come from paths the user named (the standard library words them well).
USER_ERRORS = (UserError, FileNotFoundError, FileExistsError)

CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$|^[A-Z][A-Z0-9_]*$")

# Commands that end in `[DATASET] [CONFIG.yaml] [KEY VALUE]...` take words click does not know.
PAIRS_SETTINGS = {"ignore_unknown_options": True}


class UserErrorCommand(click.Command):
    """A command that shows a user's mistake as `Error: <message>` and exit status 1, without
    a traceback, whether it runs under `s2d-fast` or on its own."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as err:
            shown = click.ClickException(str(err))
            shown.exit_code = getattr(err, "exit_code", 1)  # e.g. 130 / 143 for a run stopped by a signal
            raise shown from None


class UserErrorGroup(click.Group):
    """A group whose commands (and nested groups) are all `UserErrorCommand`s."""

    command_class = UserErrorCommand
    group_class = type  # nested groups are UserErrorGroups too


def split_positionals(args: tuple[str, ...]) -> tuple[str | None, str | None, list[str]]:
    """The paper's form `DATASET CONFIG.yaml KEY VALUE ...`: leading words before the first
    upper-case KEY are a dataset name and/or a YAML path; the rest are KEY VALUE pairs."""
    dataset = config = None
    rest = list(args)
    while rest and not CONFIG_KEY.match(rest[0]):
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


def split_pairs(words: list[str]) -> tuple[list[str], list[str]]:
    """`words` up to the first config KEY, and the KEY VALUE pairs from there on."""
    first = next((i for i, word in enumerate(words) if CONFIG_KEY.match(word)), len(words))
    return words[:first], words[first:]


def _pairs(words: list[str]) -> dict[str, str]:
    return {words[i]: words[i + 1] for i in range(0, len(words) - 1, 2)}


def builtin_recipe(name: str) -> Path:
    """A recipe of the built-in dataset shipped with the package (`configs/synthetic/<name>.yaml`)."""
    return packaged_configs() / "synthetic" / f"{name}.yaml"


def config_from_args(config_file: str | None, args: tuple[str, ...], *, recipe: str | None = None,
                     checkpoint: str | None = None, **options: str | None):
    """The config of a command: `--config` or the positional YAML, the positional dataset, then
    the command's own options (`options` maps a config key, dots as `__`, to its value or None),
    then the KEY VALUE pairs. An option and a pair that set the same key must agree.

    With no config file: the config saved in `checkpoint` when one is given (the model it holds
    is built as it was trained); else, on the built-in dataset as generated under
    DATA.CACHE_DIR (no other dataset named, no DATA.ROOT), its own `recipe` (a name in
    `configs/synthetic/`, `{stage}` standing for the stage asked for), which is sized for a
    laptop, where the defaults are paper-scale.
    """
    pos_dataset, pos_config, pairs = split_positionals(args)
    if pos_config and config_file:
        raise click.UsageError(f"two config files given: --config {config_file} and {pos_config}")
    given = _pairs(pairs)
    overrides: list[str] = []
    if pos_dataset is not None:
        overrides += ["DATA.DATASET", pos_dataset]
    for name, value in options.items():
        key = name.replace("__", ".")
        if value is None:
            continue
        if key in given and given[key] != value:
            raise click.UsageError(f"{key} is given twice, {value!r} by an option and {given[key]!r} as a KEY VALUE pair")
        overrides += [key, value]
    config_file = config_file or pos_config
    saved = None
    if not config_file and checkpoint:
        text = stored_config(checkpoint)
        saved = (text, str(checkpoint)) if text else None
    elif not config_file and recipe:
        chosen = {**given, **dict(zip(overrides[::2], overrides[1::2]))}
        if chosen.get("DATA.DATASET", "synthetic") == "synthetic" and not chosen.get("DATA.ROOT"):
            config_file = str(builtin_recipe(recipe.format(stage=chosen.get("TRAIN.STAGE", "warmup"))))
            click.echo(f"no config file: the built-in dataset's recipe {config_file}", err=True)
    return load_config(config_file, overrides + pairs, saved=saved)


def config_arguments(command):
    """`--config FILE` and the trailing `[DATASET] [CONFIG.yaml] [KEY VALUE]...` of a command
    (which also needs `context_settings=PAIRS_SETTINGS`)."""
    command = click.argument("args", nargs=-1, type=click.UNPROCESSED)(command)
    return click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file.")(command)
