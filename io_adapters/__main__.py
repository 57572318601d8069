"""``python -m io_adapters``: the ``ocigraph`` command line as a process of its own, as the
installed ``ocigraph`` script runs it (:func:`io_adapters.cli.run`)."""

from .cli import run

if __name__ == "__main__":
    run()
