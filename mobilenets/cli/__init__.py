"""The ``mobilenets`` command line."""
from mobilenets.cli.main import main

__all__ = ["main"]
