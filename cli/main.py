"""The ``adares`` command: a thin shell over the library.

Each subcommand parses options, calls one library function, and turns the outcome into output and
an exit status: 0 success, 1 some inputs failed (the rest done), 2 bad usage.
"""

from __future__ import annotations

import sys

import click

from adares import __version__
from adares.errors import AdaresError

from .extract import extract_command
from .inspect import inspect_command
from .models import models_command
from .train import train_command


class _Group(click.Group):
    """Report library errors as one clear line instead of a traceback.

    Bad settings (``ParameterError``, ``ModelError``) are usage errors: exit 2.
    """

    def invoke(self, ctx: click.Context):  # noqa: ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except AdaresError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="adares")
def main() -> None:
    """adares: adaptive-resolution audio features.

    Fine-hop log-mel spectrograms, merged by a trained DiffRes compressor into variable-resolution
    frames, each with its exact time span.
    """


main.add_command(extract_command)
main.add_command(inspect_command)
main.add_command(train_command)
main.add_command(models_command)
