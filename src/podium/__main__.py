"""``python -m podium`` runs the CLI."""

from .cli import main

main()
