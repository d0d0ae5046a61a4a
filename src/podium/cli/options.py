"""Options shared by several commands."""

from __future__ import annotations

import click

pool_option = click.option(
    "--pool",
    "pool_ref",
    default="embedded",
    show_default=True,
    envvar="PODIUM_POOL",
    help="A shipped pool name (embedded, ollama, openrouter, eu) or a path to a pool YAML file.",
)


class SuggestingGroup(click.Group):
    """A click group that answers an unknown subcommand with the closest one ("did you mean")."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        known = self.list_commands(ctx)
        if name and not name.startswith("-") and name not in known:
            from ..suggest import did_you_mean

            raise click.UsageError(
                f"no such command '{name}'{did_you_mean(name, known)}; commands: {', '.join(known)}", ctx
            )
        return super().resolve_command(ctx, args)
