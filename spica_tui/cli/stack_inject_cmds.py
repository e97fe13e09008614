"""``spica stack inject``: the line of a stack unit that measures the co-add's zero point and
writes the copy with artificial stars its completeness is measured on.

Thin: :mod:`spica_core.stacking.completeness` does the work. Exit codes: 0 done; 1 a file
missing or unusable (co-add, weight, catalogue, PSF, too few reference matches), named in
the message; 2 usage.
"""

from __future__ import annotations

from typing import Annotated

import typer

from spica_tui.cli.output import emit_json, note


def stack_inject(
    stack: Annotated[str, typer.Argument(metavar="STACK", help="The stack (its files' stem).")],
    workdir: Annotated[
        str, typer.Option("--workdir", metavar="DIR", help="The stack's work directory.")
    ],
    refcat: Annotated[
        str,
        typer.Option(
            "--refcat", metavar="FILE", help="The release's reference catalogue (FITS_LDAC)."
        ),
    ],
    seed: Annotated[
        int | None,
        typer.Option("--seed", metavar="N", help="Seed of the stars (default: from STACK)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Zero point of the co-add against the reference catalogue, then a copy of the co-add
    with artificial stars of its PSF (STACK.inject.fits) and what was injected
    (STACK.inject.truth.fits); the co-add itself is left as it is.
    """
    from pathlib import Path

    from spica_core.names import validate_name
    from spica_core.stacking.completeness import coadd_psf, inject, seed_of, zero_point
    from spica_core.stacking.outputs import StackOutputs

    validate_name(stack, "stack")
    outputs = StackOutputs(Path(workdir), stack)
    psf = coadd_psf(outputs)
    zp, stars = zero_point(outputs.catalog, Path(refcat), coadd=outputs.coadd, fwhm_px=psf.fwhm_px)
    done = inject(
        outputs,
        zero_point=zp,
        seeing=psf.fwhm,
        beta=psf.beta,
        seed=seed_of(stack) if seed is None else seed,
        zero_point_stars=stars,
    )
    if as_json:
        emit_json(
            {
                "stack": stack,
                "zero_point": zp,
                "zero_point_stars": stars,
                "seeing": psf.fwhm,
                "injected": done.stars,
                "magnitudes": [done.bright, done.faint],
                "image": str(done.image),
                "truth": str(done.truth),
            }
        )
        return
    note(
        f"{stack}: zero point {zp:.3f} ({stars} reference stars), {done.stars} stars of "
        f'{psf.fwhm:.2f}" injected, magnitudes {done.bright:.2f} to {done.faint:.2f}, '
        f"into {done.image}"
    )


def register(app: typer.Typer) -> None:
    from spica_tui.cli.report_cmds import stack_app

    stack_app.command("inject")(stack_inject)
