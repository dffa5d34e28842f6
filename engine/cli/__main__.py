"""``python -m stylegrad.cli``: the stylegrad command (as the ``stylegrad`` script)."""
from stylegrad.cli.main import entry

if __name__ == "__main__":
    entry()
