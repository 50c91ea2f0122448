"""``--config FILE`` and ``--write-config FILE`` for any command: settings in a YAML file.

A config file is a mapping from option names (as on the command line, with or without the
leading dashes, ``-`` or ``_`` alike) to values. It supplies the defaults of the command's
options, so a flag given on the command line overrides the file, and the same settings lead to
the same run (and the same configuration hash) whichever way they were given. ``--write-config``
writes every option of the command with the value it would run with (file, flags and defaults
resolved) and exits without running, so a run can be recorded, edited and repeated.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import click
import yaml

__all__ = ["config_options"]

_SKIPPED = {"config", "write_config", "help"}
"""Options that are not settings of a run."""
_TARGET = "adares.write_config"


def config_options(command: click.Command) -> click.Command:
    """Add ``--config`` and ``--write-config`` to a click command (use below ``@click.command``)."""
    command.params.insert(
        0,
        click.Option(
            ["--config", "config"],
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            is_eager=True,
            expose_value=False,
            callback=_load,
            help="Read settings from this YAML file (flags given here override it).",
        ),
    )
    command.params.insert(
        1,
        click.Option(
            ["--write-config", "write_config"],
            type=click.Path(dir_okay=False, allow_dash=True),
            expose_value=False,
            callback=_remember_target,
            help="Write every setting, with the value it would run with, to this YAML file ('-': standard "
            "output) and exit.",
        ),
    )
    run = command.callback

    @functools.wraps(run)  # type: ignore[arg-type]
    def callback(**values: Any) -> Any:
        target = click.get_current_context().meta.get(_TARGET)
        if target is None:
            return run(**values)  # type: ignore[misc]
        _write(command, values, target)
        return None

    command.callback = callback
    return command


def _remember_target(context: click.Context, parameter: click.Parameter, target: str | None) -> None:
    # Written once every option has its value, by the command's callback.
    if target is not None:
        context.meta[_TARGET] = target


def _write(command: click.Command, values: dict[str, Any], target: str) -> None:
    settings = {option.name.replace("_", "-"): _plain(values.get(option.name)) for option in _settings(command)}
    text = yaml.safe_dump(settings, sort_keys=False, allow_unicode=True)
    if target == "-":
        click.echo(text, nl=False)
    else:
        Path(target).write_text(text, encoding="utf-8")


def _load(context: click.Context, parameter: click.Parameter, path: Path | None) -> None:
    if path is None:
        return
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise click.BadParameter(f"cannot read {path}: {' '.join(str(error).split())}", param=parameter) from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise click.BadParameter(f"{path} must hold a mapping of option names to values", param=parameter)
    names = {option.name: option for option in _settings(context.command)}
    values, unknown = {}, []
    for key, value in loaded.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name not in names:
            unknown.append(str(key))
        else:
            values[name] = value
    if unknown:
        raise click.BadParameter(
            f"{path} names options {', '.join(sorted(unknown))} that `{context.command.name}` does not have",
            param=parameter,
        )
    context.default_map = {**(context.default_map or {}), **values}


def _settings(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and p.name not in _SKIPPED and p.expose_value]


def _plain(value: Any) -> Any:
    """A value YAML writes plainly: paths as strings, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value
