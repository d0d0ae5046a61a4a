"""Options shared by several commands."""

from __future__ import annotations

import click

pool_option = click.option(
    "--pool", "pool_ref", default="embedded", show_default=True, envvar="PODIUM_POOL",
    help="A shipped pool name (embedded, ollama, openrouter, eu) or a path to a pool YAML file.",
)
