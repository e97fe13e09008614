"""Which images a stacking release takes (``[[releases]].rules``), each refusal with its
reason.

Limits are strict as the seed writes them: exposure time above ``min_exptime``, seeing
below ``max_seeing`` (or the filter's own limit, by full name first, then by letter),
airmass below ``max_airmass``. An image must have passed QFin (``qf_status`` done), carry
one of the release's grades and lie on a node. A limit set and a figure unknown refuses the
image: an exposure nobody measured is not stacked on faith.
"""

from __future__ import annotations

from dataclasses import dataclass

from spica_core.auto.images import AutoImage
from spica_core.auto.tiles import filter_letter
from spica_core.config import StackRulesConfig

#: ``image.qf_status`` of an image QFin has measured.
QFIN_DONE = "done"


@dataclass(frozen=True)
class Refusal:
    image: str
    reason: str


def filter_matches(name: str, wanted: list[str] | tuple[str, ...]) -> bool:
    """Whether filter ``name`` is among ``wanted`` (letters or full names): the same
    letter is the same filter in a tile's name."""
    return filter_letter(name) in {filter_letter(w) for w in wanted}


def seeing_limit(rules: StackRulesConfig, filter: str | None) -> float | None:
    """The seeing limit of ``filter``: its own (full name, then letter), else the release's."""
    if filter is not None:
        for key in (filter, filter_letter(filter)):
            if key in rules.max_seeing_filter:
                return rules.max_seeing_filter[key]
    return rules.max_seeing


def refusal(rules: StackRulesConfig, image: AutoImage) -> str | None:
    """Why the release does not take ``image``; None when it does."""
    if image.qf_status != QFIN_DONE:
        return f"QFin not done (status {image.qf_status})"
    if image.node is None or image.path is None or image.partition is None:
        return "not on a node"
    if image.grade is None:
        return "not graded"
    if image.grade not in rules.grades:
        return f"grade {image.grade} (the release takes {', '.join(rules.grades)})"
    if image.filter is None:
        return "no filter"
    if rules.filters and not filter_matches(image.filter, rules.filters):
        return f"filter {image.filter} not stacked (filters {', '.join(rules.filters)})"
    if image.ra is None or image.dec is None:
        return "no pointing (RA, Dec)"
    if image.exptime is None or not image.exptime > rules.min_exptime:
        return f"exposure {_figure(image.exptime, 's')} not above {rules.min_exptime:g} s"
    limit = seeing_limit(rules, image.filter)
    if limit is not None and (image.seeing is None or not image.seeing < limit):
        return f'seeing {_figure(image.seeing, chr(34))} not below {limit:g}" ({image.filter})'
    if rules.max_airmass is not None and (
        image.airmass is None or not image.airmass < rules.max_airmass
    ):
        return f"airmass {_figure(image.airmass, '')} not below {rules.max_airmass:g}"
    return None


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "unknown"
    return f"{value:g}{' ' if unit == 's' else ''}{unit}"


def select_images(
    rules: StackRulesConfig, images: list[AutoImage]
) -> tuple[list[AutoImage], list[Refusal]]:
    """The images the rules accept, and a refusal for each of the others."""
    accepted: list[AutoImage] = []
    refused: list[Refusal] = []
    for image in images:
        why = refusal(rules, image)
        if why is None:
            accepted.append(image)
        else:
            refused.append(Refusal(image.filename, why))
    return accepted, refused
