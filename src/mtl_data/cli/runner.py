"""Running a Click command as a user tool (every user error is one line on stderr, never a
traceback), and the option parsers the tools share."""

from __future__ import annotations

import sys

import click

from mtl_data.errors import MtlDataError


def image_size_option(ctx, param, value: str) -> tuple[int, int]:
    """Click callback: ``HxW`` (e.g. ``256x512``) -> (H, W), both >= 1."""
    try:
        h, w = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected HxW, e.g. 256x512") from None
    if h < 1 or w < 1:
        raise click.BadParameter(f"{value!r}: both sides must be >= 1")
    return h, w


#: Click >= 8.2 raises this for a group called without a command (8.1 printed the help and exited 0)
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def run(command: click.Command, argv: list[str] | None, prog_name: str) -> None:
    """Run ``command`` with ``argv``; user errors become one ``error: ...`` line and a non-zero exit.

    Click's usage errors name the command's ``--help``; a group called without a command prints
    its help and exits 0; ``MtlDataError`` (bad data, bad options, an output that cannot be
    written) exits 1; an interrupt exits 130 and says the command can be re-run.
    """
    try:
        command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except _NO_ARGS_IS_HELP as exc:  # `mtl-data`, `mtl-data ingest`: the help, as --help prints it
        click.echo(exc.ctx.get_help(), color=exc.ctx.color)
        sys.exit(0)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        click.echo(f"error: {exc.format_message()}{where}", err=True)
        sys.exit(exc.exit_code)
    except MtlDataError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("error: interrupted; re-run the same command to resume", err=True)
        sys.exit(130)
