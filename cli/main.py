"""The ``adares`` command: a thin shell over the library.

Each subcommand parses options, calls one library function, and turns the outcome into output and
an exit status: 0 success, 1 some inputs failed (the rest done) or an input could not be read,
2 bad usage (an invalid setting or model).
"""

from __future__ import annotations

import importlib
import sys

import click

from adares import __version__
from adares.errors import AdaresError, ModelError, ParameterError

# Subcommands are imported when used: `adares extract` must not pay for importing torch in the
# client (its workers import it, in parallel), while `adares train` and `adares inspect` need it.
_COMMANDS = {
    "extract": "extract:extract_command",
    "inspect": "inspect:inspect_command",
    "train": "train:train_command",
    "models": "models:models_command",
    "export": "export:export_command",
}


class _Group(click.Group):
    """Subcommands loaded on demand; library errors reported as one clear line, not a traceback.

    Bad settings (``ParameterError``, ``ModelError``) are usage errors: exit 2. Any other
    ``AdaresError`` (an unreadable audio or feature file) exits 1, like a run whose inputs failed.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        module, attribute = _COMMANDS[cmd_name].split(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), attribute)

    def invoke(self, ctx: click.Context):  # noqa: ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except AdaresError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(exit_status(error))


def exit_status(error: AdaresError) -> int:
    """2 for a usage error (an invalid setting or model), 1 for anything else adares reports."""
    return 2 if isinstance(error, (ParameterError, ModelError)) else 1


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="adares")
def main() -> None:
    """adares: adaptive-resolution audio features.

    Fine-hop log-mel spectrograms, merged by a trained DiffRes compressor into variable-resolution
    frames, each with its exact time span.
    """
