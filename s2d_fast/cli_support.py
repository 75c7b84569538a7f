"""What every command of `s2d-fast` shares: reading a config from the paper's positional form,
and showing a user's mistake as one line (`UserErrorCommand`).

The commands themselves live beside what they drive (`cli.py`, `data/commands.py`, `bench/`);
they import this module, and `cli.py` imports them, never the reverse.
"""

from __future__ import annotations

import re

import click

from s2d_fast.config import load_config
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
            raise click.ClickException(str(err)) from None


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


def config_from_args(config_file: str | None, args: tuple[str, ...], **options: str | None):
    """The config of a command: `--config` or the positional YAML, the positional dataset, then
    the command's own options (`options` maps a config key, dots as `__`, to its value or None),
    then the KEY VALUE pairs."""
    pos_dataset, pos_config, pairs = split_positionals(args)
    if pos_config and config_file:
        raise click.UsageError(f"two config files given: --config {config_file} and {pos_config}")
    overrides: list[str] = []
    if pos_dataset is not None:
        overrides += ["DATA.DATASET", pos_dataset]
    for key, value in options.items():
        if value is not None:
            overrides += [key.replace("__", "."), value]
    return load_config(config_file or pos_config, overrides + pairs)


def config_arguments(command):
    """`--config FILE` and the trailing `[DATASET] [CONFIG.yaml] [KEY VALUE]...` of a command
    (which also needs `context_settings=PAIRS_SETTINGS`)."""
    command = click.argument("args", nargs=-1, type=click.UNPROCESSED)(command)
    return click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file.")(command)
