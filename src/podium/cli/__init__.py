"""The ``podium`` command. Subcommands live in their own modules and load lazily.

Errors never show a traceback: misuse (bad flags, bad config) exits 2, runtime failures exit 1.
"""

from __future__ import annotations

import importlib
import sys

import click

from ..errors import PodiumError, UsageError
from .helptext import ENVIRONMENT
from .options import SuggestingGroup

# command name -> "module:attribute"; loaded only when used, so `podium ask` never imports FastAPI.
SUBCOMMANDS = {
    "ask": "podium.cli.ask:ask",
    "models": "podium.cli.pool:models",
    "pool": "podium.cli.pool:pool",
    "traces": "podium.cli.traces:traces",
    "ui": "podium.cli.traces:ui",
    "train": "podium.cli.train:train",
    "eval": "podium.cli.train:eval_group",
    "serve": "podium.cli.serve:serve",
    "bench": "podium.cli.bench:bench",
    "doctor": "podium.cli.doctor:doctor",
    "demo": "podium.cli.demo:demo",
    "keys": "podium.cli.keys:keys",
}


class LazyGroup(SuggestingGroup):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        try:
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        except (ImportError, AttributeError) as exc:
            raise UsageError(f"'podium {name}' is not available in this install ({exc})") from None


@click.group(cls=LazyGroup, epilog=ENVIRONMENT)
@click.version_option(package_name="podium")
def cli() -> None:
    """podium: multi-agent orchestration over a pool of LLMs.

    \b
    Start here:
      podium doctor                          check the install, extras, keys and endpoints
      podium ask "What is 17 * 23?"          orchestrate on the embedded offline pool
      podium ask --pool openrouter "..."     the same on a remote pool (needs its API key)
      podium models --pool eu                what a pool holds
      podium traces ls                       past runs; `podium traces show ID` for one
    Every command has examples in its --help.
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn every podium error into one clear line (secrets scrubbed)."""
    from ..scrub import install_log_scrubbing, scrub

    install_log_scrubbing()
    try:
        cli.main(args=argv, prog_name="podium", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # one line, with where to read more
        path = exc.ctx.command_path if exc.ctx else "podium"
        click.echo(f"error: {' '.join(exc.format_message().split())} (see '{path} --help')", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except UsageError as exc:
        click.echo(f"error: {scrub(str(exc))}", err=True)
        sys.exit(2)
    except PodiumError as exc:
        click.echo(f"error: {scrub(str(exc))}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
