"""``python -m adares.cli``: the same as the ``adares`` command."""

from .main import main

main(prog_name="adares")
