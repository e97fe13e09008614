"""``spica stack prepare`` and ``spica stack record``: the first and last lines of a stack
unit, which its ``commands.sh`` calls on the node.

Thin: :mod:`spica_core.stacking.prepare` lays out one input, :mod:`spica_core.stacking.record`
reads the tools' outputs into dbspica. Exit codes: 0 done; 1 a broken input or unusable
outputs (the message names the stack, the file and what to do); 2 usage; 3 dbspica
unreachable.
"""

from __future__ import annotations

from typing import Annotated

import typer

from spica_tui.cli.context import state
from spica_tui.cli.output import emit_json, note
from spica_tui.cli.report_cmds import stack_app

StackArg = Annotated[str, typer.Argument(metavar="STACK", help="The stack unit.")]
WorkdirOpt = Annotated[
    str, typer.Option("--workdir", metavar="DIR", help="The unit's work directory.")
]


@stack_app.command("prepare")
def prepare(
    stack: StackArg,
    workdir: WorkdirOpt,
    image: Annotated[str, typer.Option("--image", metavar="IMAGE", help="The input exposure.")],
    path: Annotated[
        str, typer.Option("--path", metavar="PATH", help="The exposure's file on this node.")
    ],
    checksum: Annotated[
        str | None,
        typer.Option("--checksum", metavar="SUM", help="Its checksum as ingested (checked)."),
    ] = None,
    ahead: Annotated[
        list[str] | None,
        typer.Option(
            "--ahead", metavar="KEY=VALUE", help="A card of its .ahead file (repeatable)."
        ),
    ] = None,
    weight: Annotated[
        str | None, typer.Option("--weight", metavar="PATH", help="QFin's weight map.")
    ] = None,
    flag: Annotated[
        str | None, typer.Option("--flag", metavar="PATH", help="QFin's flag map.")
    ] = None,
    scamp: Annotated[bool, typer.Option("--scamp", help="An input of SCAMP.")] = False,
    swarp: Annotated[bool, typer.Option("--swarp", help="An input of SWarp.")] = False,
) -> None:
    """First lines of a stack unit, one per input: check the exposure against its checksum,
    lay out its plain MEF, weight and flag maps and .ahead in the work directory's inputs/
    and list it for SCAMP and / or SWarp.

    A corrupt or truncated exposure exits 1 with the image, its path and what to do.
    """
    from pathlib import Path

    from spica_core.names import validate_name
    from spica_core.stacking.outputs import StackOutputs
    from spica_core.stacking.prepare import parse_ahead, prepare_input

    out = StackOutputs(workdir=Path(workdir), stack=validate_name(stack))
    done = prepare_input(
        out,
        image=image,
        path=Path(path),
        checksum=checksum,
        ahead=parse_ahead(ahead or ()),
        weight=Path(weight) if weight else None,
        flag=Path(flag) if flag else None,
        scamp=scamp,
        swarp=swarp,
    )
    roles = [r for r, on in (("scamp", scamp), ("swarp", swarp)) if on]
    note(f"{stack}: {image} ready ({done.ccds} CCDs; {', '.join(roles) or 'no role'})")


@stack_app.command("record")
def record(
    ctx: typer.Context,
    stack: StackArg,
    workdir: WorkdirOpt,
    release: Annotated[str, typer.Option("--release", metavar="RELEASE", help="The release.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Last line of a stack unit: read the co-add's outputs (SCAMP's RMS, seeing,
    background, exposure, completeness, thumbnail) and write the stack's results in
    dbspica and <stack>.result.json beside the co-add.

    Unusable outputs exit 1 with the stack and the file at fault.
    """
    import dataclasses
    from pathlib import Path

    from spica_core.stacking.record import record_stack

    done = record_stack(state(ctx).engine(), stack, Path(workdir), release)
    if as_json:
        emit_json(dataclasses.asdict(done))
        return
    f = done.figures
    seeing = f'{f.seeing:.2f}"' if f.seeing is not None else "not measured"
    rms = f.scamp_internal_rms
    internal = f'{rms:.3f}"' if rms is not None else "none"
    note(
        f"{stack}: {f.swarp_inputs} co-added ({f.scamp_inputs} in SCAMP), "
        f"{f.exptime or 0:.0f} s, seeing {seeing}, SCAMP internal RMS {internal}, "
        f"{f.sources} sources"
    )


def register(parent: typer.Typer) -> None:
    """The commands are on ``spica stack`` (report_cmds' group) once this module is imported."""
    del parent
