"""``python -m io_adapters``: the ``ocigraph`` command line without the installed script."""

from .cli import run

if __name__ == "__main__":
    run()
