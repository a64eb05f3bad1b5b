"""The command line: arguments, progress, rendering. The only layer that prints.

Imports stay light at module level: `plait --version` and `plait --help` must
not pay for the runtime, node modules, rich, httpx, llm or SQLite.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from plait import __version__
from plait.errors import PlaitError

_WORKFLOW_SUFFIXES = (".json", ".yaml", ".yml", ".pflow.md")


_RUN_OPTIONS_WITH_VALUE = ("-o", "--output-format", "--nodes", "--executor", "--scheduler")


def _looks_like_workflow(word: str) -> bool:
    return word.endswith(_WORKFLOW_SUFFIXES) or os.path.sep in word or Path(word).is_file()


class _Group(click.Group):
    """`plait WORKFLOW ...` is shorthand for `plait run WORKFLOW ...`."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] not in self.commands and _looks_like_workflow(args[0]):
            args = ["run", *args]
        return super().resolve_command(ctx, args)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="plait")
def cli() -> None:
    """plait: validate, then run, declarative workflows — with batch processing.

    \b
    plait run WORKFLOW [name=value ...]   run a .json/.yaml/.pflow.md workflow
    plait WORKFLOW [name=value ...]       the same, shorter
    plait validate WORKFLOW               check it without running
    plait convert WORKFLOW --to md|json   the same workflow as .pflow.md or JSON
    plait nodes [TYPE]                    node types, their params and outputs
    plait schema                          JSON Schema of the workflow format
    plait runs                            recent runs, from .plait/runs.db
    plait show RUN                        one run: nodes, failed items and errors
    plait timeline RUN -o FILE.html       a picture of the run over time
    """


_nodes_option = click.option(
    "--nodes",
    "nodes_paths",
    multiple=True,
    type=click.Path(),
    help="A .py file or folder with custom node types (repeatable).",
)
_debug_option = click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")


def _registry(nodes_paths: tuple[str, ...]) -> Any:
    from plait.nodes.registry import Registry

    registry = Registry()
    for path in nodes_paths:
        registry.load_path(path)
    return registry


def _loadable(registry: Any, names: list[str]) -> list[tuple[str, Any]]:
    """Node classes that load; a broken plugin is reported, not fatal, when listing."""
    out = []
    for name in names:
        try:
            out.append((name, registry[name]))
        except PlaitError as exc:
            if len(names) == 1:
                raise
            click.echo(f"warning: {exc.message}", err=True)
    return out


def _fail(exc: PlaitError, output_format: str = "text", invalid_status: str = "failed") -> None:
    from plait.cli.render import error_block

    if output_format == "json":
        from plait.errors import WorkflowInvalid

        where = {"file": exc.file} if exc.file else {}
        # The same shape as a run's result, so a caller parses one format;
        # `invalid` tells a workflow/usage error (exit 2) from a failed run.
        payload: dict[str, Any] = {
            "status": (
                invalid_status
                if exc.exit_code == 2
                else "interrupted" if exc.exit_code == 130 else "failed"
            ),
            "invalid": exc.exit_code == 2,
            "outputs": {},
            "nodes": {},
            "duration_ms": 0,
            "errors": (
                [{**p.to_dict(), **where} for p in exc.problems]
                if isinstance(exc, WorkflowInvalid)
                else [{"message": exc.message, **({"hint": exc.hint} if exc.hint else {}), **where}]
            ),
        }
        click.echo(json.dumps(payload, indent=2, ensure_ascii=False))
    error_block(exc)
    sys.exit(exc.exit_code)


@contextlib.contextmanager
def _errors(
    output_format: str = "text", debug: bool = False, invalid_status: str = "failed"
) -> Iterator[None]:
    """User errors as one clear block; a bug as one line unless --debug (or PLAIT_DEBUG=1)."""
    try:
        yield
    except PlaitError as exc:
        _fail(exc, output_format, invalid_status)
    except KeyboardInterrupt:  # Ctrl-C outside a run's own handler: still exit 130 (SPEC §7)
        from plait.errors import Interrupted

        _fail(Interrupted("interrupted"), output_format, invalid_status)
    except Exception:
        if debug or os.environ.get("PLAIT_DEBUG"):
            raise
        import traceback

        click.echo(
            "internal error: plait hit a bug; run again with --debug for the traceback\n  "
            + traceback.format_exc().strip().splitlines()[-1],
            err=True,
        )
        sys.exit(1)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("workflow", type=click.Path())
@click.argument("params", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--output-format",
    "-o",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: the outputs as they are; json: one object with status, outputs, nodes, errors.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.option(
    "--no-record", is_flag=True, help="Keep no run record (see `plait runs`) for this run."
)
@click.option(
    "--executor",
    metavar="NAME",
    help="Where batch items run: auto, sequential, threads, or an installed executor "
    "(a batch's own 'executor' field still wins).",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="The Dask scheduler for the dask executor (tcp://host:8786; default $PLAIT_DASK_SCHEDULER, "
    "else a local cluster). Implies --executor dask when no --executor is given.",
)
@_nodes_option
@_debug_option
def run(
    workflow: str,
    params: tuple[str, ...],
    output_format: str,
    quiet: bool,
    no_record: bool,
    executor: str | None,
    scheduler: str | None,
    nodes_paths: tuple[str, ...],
    debug: bool,
) -> None:
    """Validate WORKFLOW, then run it. Inputs are given as name=value.

    Every run is recorded in .plait/runs.db of the working directory (or
    $PLAIT_HOME): see `plait runs`, `plait show RUN`, `plait timeline RUN`.
    """
    code = 1
    with _errors(output_format, debug):
        from plait.cli.running import run_command

        code = run_command(
            workflow,
            params,
            output_format=output_format,
            quiet=quiet,
            nodes_paths=nodes_paths,
            record=not no_record,
            executor=executor,
            scheduler=scheduler,
        )
    sys.exit(code)


@cli.command()
@click.argument("workflow", type=click.Path())
@click.option("--output-format", "-o", type=click.Choice(["text", "json"]), default="text")
@_nodes_option
@_debug_option
def validate(workflow: str, output_format: str, nodes_paths: tuple[str, ...], debug: bool) -> None:
    """Check WORKFLOW without running anything."""
    with _errors(output_format, debug, invalid_status="invalid"):
        from plait.runtime.compile import load_and_compile

        compiled = load_and_compile(workflow, _registry(nodes_paths))
    if output_format == "json":
        click.echo(json.dumps({"status": "valid", "errors": [], "warnings": compiled.warnings}, indent=2))
    else:
        for warning in compiled.warnings:
            click.echo(f"warning: {warning}", err=True)
        n = len(compiled.nodes)
        click.echo(f"✓ {workflow} is valid ({n} node{'s' if n != 1 else ''})")


@cli.command()
@click.argument("workflow", type=click.Path())
@click.option("--to", "to", type=click.Choice(["json", "md"]), required=True, help="The format to write.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to this file, not stdout.")
def convert(workflow: str, to: str, output: str | None) -> None:
    """Convert WORKFLOW between JSON/YAML and pflow's markdown (.pflow.md)."""
    with _errors():
        from plait.cli.convert import convert_command

        sys.exit(convert_command(workflow, to, output))


@cli.command()
@click.argument("type_name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the declarations as JSON.")
@click.option("--markdown", is_flag=True, help="Print the reference as Markdown (docs/nodes.md).")
@_nodes_option
def nodes(type_name: str | None, as_json: bool, markdown: bool, nodes_paths: tuple[str, ...]) -> None:
    """List node types with their params and outputs (or describe TYPE_NAME)."""
    with _errors():
        registry = _registry(nodes_paths)
        names = list(registry)
        if type_name is not None:
            if type_name not in registry:
                from plait.errors import UsageError, did_you_mean

                raise UsageError(
                    f"unknown node type '{type_name}'",
                    hint=did_you_mean(type_name, names) or f"types: {', '.join(names)}",
                )
            names = [type_name]
        decls = [{**cls.interface(), "source": registry.source(n)} for n, cls in _loadable(registry, names)]
    if as_json:
        click.echo(json.dumps(decls, indent=2, default=str))
        return
    from plait.cli.render import describe_node, node_markdown

    if markdown:
        click.echo(node_markdown(decls), nl=False)
        return

    click.echo("\n".join(describe_node(d) for d in decls))


@cli.command()
@click.option("--markdown", is_flag=True, help="Print the batch and retry field tables (docs/format.md).")
@_nodes_option
def schema(markdown: bool, nodes_paths: tuple[str, ...]) -> None:
    """Print the JSON Schema of the workflow format (for editors)."""
    if markdown:
        from plait.ir.format import reference_tables

        click.echo(reference_tables(), nl=False)
        return
    from plait.ir.schema import workflow_schema

    with _errors():
        registry = _registry(nodes_paths)
        decls = [cls.interface() for _, cls in _loadable(registry, list(registry))]
    click.echo(json.dumps(workflow_schema(decls), indent=2))


@cli.command()
@click.option("-n", "--limit", default=20, show_default=True, help="How many runs to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def runs(limit: int, as_json: bool) -> None:
    """List recent runs: id, start, workflow, status, duration, items.

    Runs are recorded in .plait/runs.db of the working directory ($PLAIT_HOME
    overrides the folder).
    """
    with _errors():
        from plait.cli.records_cmd import runs_command

        sys.exit(runs_command(limit, as_json))


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
def show(run_ref: str, as_json: bool) -> None:
    """Summarise a run: nodes, counts, and every failed item with its error.

    RUN is a run id, a unique prefix of one, or `last`.
    """
    with _errors():
        from plait.cli.records_cmd import show_command

        sys.exit(show_command(run_ref, as_json))


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="The HTML file to write [default: timeline-RUN.html].",
)
def timeline(run_ref: str, output: str | None) -> None:
    """Draw a run as a timeline in a self-contained HTML file.

    A lane per concurrency slot, a bar per item attempt coloured by outcome,
    nodes as bands. RUN is a run id, a unique prefix of one, or `last`.
    """
    with _errors():
        from plait.cli.records_cmd import timeline_command

        sys.exit(timeline_command(run_ref, output))


def main() -> None:
    args = sys.argv[1:]
    # `plait -q wf.json` as well as `plait wf.json -q`: when the first word that is
    # not an option is a workflow file, this is the `run` shorthand.
    first, i = None, 0
    while i < len(args):
        if args[i] in _RUN_OPTIONS_WITH_VALUE:
            i += 2
            continue
        if not args[i].startswith("-"):
            first = i
            break
        i += 1
    if (
        first is not None
        and first > 0
        and args[first] not in cli.commands
        and not any(a in ("-h", "--help", "-V", "--version") for a in args[:first])
        and _looks_like_workflow(args[first])
    ):
        args = ["run", *args]
    cli(args=args, prog_name="plait")
