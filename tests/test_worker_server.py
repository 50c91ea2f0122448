"""The fork server's preload: what the workers start with."""

from __future__ import annotations

from .conftest import python_output


def test_it_loads_the_worker_side_of_the_pipeline():
    script = (
        "import sys, adares\n"
        "names = ('adares.pipeline.worker', 'adares.registry')\n"
        "print(*(name in sys.modules for name in names))\n"
        "import adares.worker_server\n"
        "print(*(name in sys.modules for name in names))\n"
    )
    assert python_output(script) == ["False", "False", "True", "True"]
