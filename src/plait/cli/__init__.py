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
from plait.cli.prices import register as _register_prices
from plait.errors import PlaitError

_WORKFLOW_SUFFIXES = (".json", ".yaml", ".yml", ".pflow.md")


_RUN_OPTIONS_WITH_VALUE = (
    "-o", "--output-format", "--nodes", "--executor", "--scheduler", "--resume", "--rerun", "--max-parallel-nodes",
    "--items",
)


def _looks_like_workflow(word: str) -> bool:
    return word.endswith(_WORKFLOW_SUFFIXES) or os.path.sep in word or Path(word).is_file()


class _Group(click.Group):
    """`plait WORKFLOW ...` is shorthand for `plait run WORKFLOW ...`."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] not in self.commands:
            if _looks_like_workflow(args[0]):
                args = ["run", *args]
            elif not args[0].startswith("-"):
                from plait.errors import did_you_mean

                names = sorted(self.commands)
                hint = did_you_mean(args[0], names)
                raise click.UsageError(
                    f"no such command '{args[0]}' ({hint or 'commands: ' + ', '.join(names)}); "
                    "to run a workflow file, give its path: plait run FILE",
                    ctx,
                )
        return super().resolve_command(ctx, args)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="plait")
def cli() -> None:
    """plait: validate, then run, declarative workflows — with batch processing.

    \b
    plait run WORKFLOW [name=value ...]   run a .json/.yaml/.pflow.md workflow
    plait WORKFLOW [name=value ...]       the same, shorter
    plait validate WORKFLOW               check it without running
    plait resume RUN                      run it again, reusing what finished
    plait convert WORKFLOW --to md|json   the same workflow as .pflow.md or JSON
    plait nodes [TYPE]                    node types, their params and outputs
    plait schema                          JSON Schema of the workflow format
    plait runs                            recent runs (records in $PLAIT_HOME)
    plait show RUN                        one run: nodes, failed items and errors
    plait timeline RUN -o FILE.html       a picture of the run over time
    plait mcp sync | list                 MCP servers' tools as mcp-SERVER-TOOL nodes
    """


_nodes_option = click.option(
    "--nodes",
    "nodes_paths",
    multiple=True,
    type=click.Path(),
    help="A .py file or folder with custom node types (repeatable).",
)
_debug_option = click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")

_scheduler_option = click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="The Dask scheduler for the dask executor (tcp://host:8786; default $PLAIT_DASK_SCHEDULER, "
    "else a local cluster). Implies --executor dask when no --executor is given.",
)
def _cache_options(fn: Any) -> Any:
    """--cache / --no-cache / --refresh-cache: one ``cache`` parameter (on, off, refresh)."""
    fn = click.option(
        "--refresh-cache", "cache", flag_value="refresh", help="Run every item, and store the results in the cache."
    )(fn)
    fn = click.option("--no-cache", "cache", flag_value="off", help="Neither read nor write the item cache.")(fn)
    return click.option("--cache", "cache", flag_value="on", help="Cache every node's successful items across runs.")(fn)


_max_parallel_option = click.option(
    "--max-parallel-nodes",
    type=click.IntRange(min=1),
    metavar="N",
    help="Nodes of independent branches running at once (default: the workflow's "
    "max_parallel_nodes, 4); 1 runs one node at a time.",
)


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
    except BrokenPipeError:  # the reader of stdout went away: main() ends quietly
        raise
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
    "--strict",
    is_flag=True,
    help="Exit 1 when batch items failed (a 'partial' run), as the workflow's fail_on_item_errors does.",
)
@click.option(
    "--resume",
    "resume",
    metavar="RUN",
    help="Reuse what run RUN (an id, a prefix, `last`) finished: only unfinished, failed, new "
    "and changed items run.",
)
@_cache_options
@click.option("--only-unfinished", is_flag=True, help="With --resume: keep failed items failed.")
@click.option("--rerun", multiple=True, metavar="NODE", help="With --resume: run NODE again in full (repeatable).")
@click.option(
    "--executor",
    metavar="NAME",
    help="Where batch items run: auto, sequential, threads, async, dask, or an installed executor "
    "(a batch's own 'executor' field still wins).",
)
@click.option(
    "--items",
    "items",
    metavar="FILE",
    help='The items of the batch that reads standard input ({"from": "-"}), from FILE instead.',
)
@_scheduler_option
@_max_parallel_option
@click.option(
    "--estimate",
    is_flag=True,
    help="Run nothing: count the items, show sample prompts, and estimate tokens, cost "
    "(low/expected/high) and wall time from the limits and past runs (docs/limits.md).",
)
@_nodes_option
@_debug_option
def run(
    workflow: str,
    params: tuple[str, ...],
    output_format: str,
    quiet: bool,
    no_record: bool,
    strict: bool,
    resume: str | None,
    cache: str | None,
    only_unfinished: bool,
    rerun: tuple[str, ...],
    executor: str | None,
    scheduler: str | None,
    max_parallel_nodes: int | None,
    items: str | None,
    estimate: bool,
    nodes_paths: tuple[str, ...],
    debug: bool,
) -> None:
    """Validate WORKFLOW, then run it. Inputs are given as name=value.

    Every run is recorded in runs.db of $PLAIT_HOME (default: the user's data
    directory, ~/.local/share/plait): see `plait runs`, `plait show RUN`,
    `plait timeline RUN`.
    """
    code = 1
    with _errors(output_format, debug):
        _refuse_unknown_options(workflow, params)
        if estimate:
            from plait.cli.running import estimate_command

            sys.exit(estimate_command(workflow, params, output_format=output_format, nodes_paths=nodes_paths))
        from plait.cli.running import run_command

        code = run_command(
            workflow,
            params,
            output_format=output_format,
            quiet=quiet,
            nodes_paths=nodes_paths,
            record=not no_record,
            executor=executor,
            strict=strict,
            resume=resume,
            only_unfinished=only_unfinished,
            rerun=rerun,
            cache=cache or "default",
            scheduler=scheduler,
            max_parallel_nodes=max_parallel_nodes,
            items=items,
        )
    sys.exit(code)


def _refuse_unknown_options(workflow: str, params: tuple[str, ...]) -> None:
    """`run` passes words it does not know on as name=value inputs: a word that is
    an option (``-x``, ``--qiet``) is an unknown option, not a workflow or an input."""
    for word in (workflow if workflow != "-" else "", *params):  # "-": the loader says what it is
        if word.startswith("-") and "=" not in word.split("-", 2)[-1][:1] and not _is_number(word):
            from plait.errors import UsageError, did_you_mean

            known = [o for p in run.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")]
            name = word.split("=", 1)[0]
            hint = did_you_mean(name, known) or f"options of run: {', '.join(sorted(set(known)))}"
            raise UsageError(f"no such option: {name}", hint=hint)


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("run_ref", metavar="RUN")
@click.argument("params", nargs=-1, type=click.UNPROCESSED)
@click.option("--output-format", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@_cache_options
@click.option("--only-unfinished", is_flag=True, help="Keep failed items failed; run only the unfinished ones.")
@click.option("--rerun", multiple=True, metavar="NODE", help="Run NODE again in full (repeatable).")
@click.option("--strict", is_flag=True, help="Exit 1 when batch items failed (a 'partial' run).")
@click.option("--executor", metavar="NAME", help="Where batch items run (see `plait run --help`).")
@click.option("--items", "items", metavar="FILE", help="The items of the batch that reads standard input, from FILE.")
@_scheduler_option
@_max_parallel_option
@_nodes_option
@_debug_option
def resume(
    run_ref: str,
    params: tuple[str, ...],
    output_format: str,
    quiet: bool,
    cache: str | None,
    only_unfinished: bool,
    rerun: tuple[str, ...],
    strict: bool,
    executor: str | None,
    items: str | None,
    scheduler: str | None,
    max_parallel_nodes: int | None,
    nodes_paths: tuple[str, ...],
    debug: bool,
) -> None:
    """Resume run RUN: its workflow (as the file is now) and inputs run again, reusing
    every item that finished; failed, unfinished, new and changed items run.

    RUN is a run id, a unique prefix of one, or `last`. Inputs given as name=value
    replace the recorded ones; inputs that were secret must be given again.
    """
    code = 1
    with _errors(output_format, debug):
        _refuse_unknown_options(run_ref, params)
        from plait.cli.running import _run_to_resume, run_command

        old = _run_to_resume(run_ref)
        path = old.get("workflow_path")
        if not path or not Path(path).is_file():
            from plait.errors import UsageError

            raise UsageError(
                f"the workflow of run {old['run_id']} is not at {path or '(unknown)'} any more",
                hint=f"give it: plait run FILE --resume {old['run_id']}",
            )
        code = run_command(
            path,
            params,
            output_format=output_format,
            quiet=quiet,
            nodes_paths=nodes_paths,
            executor=executor,
            strict=strict,
            resumed=old,
            only_unfinished=only_unfinished,
            rerun=rerun,
            cache=cache or "default",
            items=items,
            scheduler=scheduler,
            max_parallel_nodes=max_parallel_nodes,
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

    Runs are recorded in runs.db of the user's data directory
    (~/.local/share/plait); $PLAIT_HOME chooses another folder.
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


from plait.cli.mcp import mcp as _mcp  # noqa: E402  (click only; the SDK loads in `sync`)

cli.add_command(_mcp)


@cli.group()
def cache() -> None:
    """The item cache: successful items kept across runs (see docs/runs.md)."""


@cache.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def cache_stats(as_json: bool) -> None:
    """How many entries the cache holds, how big, how often they were used."""
    with _errors():
        from plait.cli.cache_cmd import stats_command

        sys.exit(stats_command(as_json))


@cache.command("prune")
@click.option("--older-than", metavar="DURATION", help="Also drop entries older than this (7d, 12h, 30m).")
def cache_prune(older_than: str | None) -> None:
    """Drop expired entries (and, with --older-than, old ones)."""
    with _errors():
        from plait.cli.cache_cmd import prune_command

        sys.exit(prune_command(older_than))


@cache.command("clear")
def cache_clear() -> None:
    """Drop every entry."""
    with _errors():
        from plait.cli.cache_cmd import clear_command

        sys.exit(clear_command())


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
    for stream in (sys.stdout, sys.stderr):
        # A lone surrogate (from an API, a file) prints escaped instead of failing the output.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace")
    try:
        cli(args=args, prog_name="plait", standalone_mode=False)
        code: int = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except click.exceptions.Abort:
        code = 130
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except BrokenPipeError:
        code = _pipe_closed()
    sys.exit(_flush_stdout(code))


def _pipe_closed() -> int:
    """stdout's reader went away (`plait show RUN | head`): stop quietly, as SIGPIPE would."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 141


def _flush_stdout(code: int) -> int:
    """Write what is buffered now, so a full disk or a closed pipe is an error that says so."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return _pipe_closed()
    except OSError as exc:
        with contextlib.suppress(OSError):
            sys.stderr.write(f"error: cannot write the output: {exc.strerror or exc}\n")
        return code or 1
    return code


_register_prices(cli, _errors)
