"""The ``loopline`` command: global options, command groups, and turning errors into exit codes.

Errors print one clear line and exit non-zero; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from loopline._version import __version__
from loopline.cli import (
    approvals_cmds,
    artifacts_cmds,
    audit_cmds,
    data_cmds,
    db_cmds,
    demo_cmd,
    deploy_cmds,
    events_cmds,
    governance_cmds,
    lineage_cmds,
    models_bundle_cmds,
    models_cmds,
    models_mlflow_cmd,
    monitor_cmds,
    playbook_cmds,
    policy_cmds,
    retention_cmds,
    rollouts_cmd,
    runs_cmds,
    scheduler_cmd,
    score_cmd,
    serve_cmd,
    server_cmd,
    tokens_cmds,
    users_cmds,
    workspace_cmds,
)
from loopline.cli.context import CliOptions
from loopline.cli.errors import EXIT_FAILURE, EXIT_USAGE, exit_code_for
from loopline.cli.output import error
from loopline.core.errors import LooplineError

app = typer.Typer(
    name="loopline",
    help="Closed-loop ML automation: data, pipelines, registry, serving, monitoring, governance.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"loopline {__version__}")
        raise typer.Exit()


@app.callback()
def main(  # noqa: PLR0913 - one parameter per global flag is how typer declares them
    ctx: typer.Context,
    workspace: Annotated[Path | None, typer.Option(
        "--workspace", "-w", envvar="LOOPLINE_WORKSPACE",
        help="Workspace folder (default: the nearest .loopline/ upwards).")] = None,
    db_url: Annotated[str | None, typer.Option(
        help="Metadata database URL (overrides LOOPLINE_DB_URL).")] = None,
    artifact_root: Annotated[str | None, typer.Option(
        help="Artifact store root, any fsspec URL (overrides LOOPLINE_ARTIFACT_ROOT).")] = None,
    user: Annotated[str | None, typer.Option(
        help="Who acts, for the audit log (overrides LOOPLINE_USER).")] = None,
    server: Annotated[str | None, typer.Option(
        "--server", envvar="LOOPLINE_SERVER",
        help="A loopline server's URL (https://host:port): commands that can act through its "
             "API do, as the token's user.")] = None,
    token: Annotated[str | None, typer.Option(
        "--token", envvar="LOOPLINE_TOKEN", show_default=False,
        help="API token for --server (`loopline tokens create`). Prefer the LOOPLINE_TOKEN "
             "environment variable: a token on the command line shows in `ps` and shell "
             "history.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Closed-loop ML automation: data, pipelines, registry, serving, monitoring, governance."""
    ctx.obj = CliOptions(workspace, db_url, artifact_root, user, debug, server, token)
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


workspace_cmds.register(app)
app.add_typer(db_cmds.app, name="db")
app.add_typer(data_cmds.app, name="data")
app.add_typer(artifacts_cmds.app, name="artifacts")
app.add_typer(audit_cmds.app, name="audit")
app.add_typer(events_cmds.app, name="events")
app.add_typer(lineage_cmds.app, name="lineage")
app.add_typer(policy_cmds.app, name="policy")
app.add_typer(users_cmds.app, name="users")
app.add_typer(tokens_cmds.app, name="tokens")
app.add_typer(approvals_cmds.app, name="approvals")
app.add_typer(retention_cmds.app, name="retention")
app.add_typer(governance_cmds.app, name="governance")
app.add_typer(deploy_cmds.app, name="deploy")
app.add_typer(rollouts_cmd.app, name="rollouts")
demo_cmd.register(app)
runs_cmds.register(app)
models_bundle_cmds.register(models_cmds.app)
models_cmds.register(app)
models_mlflow_cmd.register(models_cmds.app)
monitor_cmds.register(app)
scheduler_cmd.register(app)
serve_cmd.register(app)
server_cmd.register(app)
score_cmd.register(app)
playbook_cmds.register(app)


def run(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with its status; the console script's entry point."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    command = typer.main.get_command(app)
    try:
        status = command.main(args=args, prog_name="loopline", standalone_mode=False)
    except LooplineError as exc:
        if debug:
            raise
        error(exc.message)
        sys.exit(exit_code_for(exc))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        error("aborted")
        sys.exit(EXIT_FAILURE)
    except typer.TyperException as exc:  # usage errors: unknown flags, missing files
        show = getattr(exc, "show", None)  # click's usage errors print themselves with help
        if callable(show):
            show()
        else:
            error(str(exc))
        sys.exit(int(getattr(exc, "exit_code", EXIT_USAGE)))
    except KeyboardInterrupt:
        error("interrupted")
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        error(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        sys.exit(EXIT_FAILURE)
    sys.exit(status if isinstance(status, int) else 0)
