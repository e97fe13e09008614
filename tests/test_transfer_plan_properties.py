"""The placement planner's rules, for any cluster and runid hypothesis can think of: no
partition past its virtual free (hence never past its reserve), every file placed exactly
once or none at all, no node that does not answer, one node whenever one node can hold the
runid, and an impossible plan only when the space really is not there."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from spica_core.transfer.planner import ImageNeed, Plan, plan_placement
from spica_core.transfer.space import (
    Disk,
    NodeSpace,
    PartitionSpace,
    needed_bytes,
    node_spaces,
    stack_product_bytes,
)

LIVENESS = ["up", "up", "up", "agent-missing", "down", "unknown"]
GB = 10**9


@st.composite
def clusters(draw: st.DrawFn) -> list[NodeSpace]:
    nodes = []
    for n in range(draw(st.integers(1, 8))):
        name = f"node{n + 1}"
        parts = []
        for p in range(draw(st.integers(0, 3))):
            total = draw(st.integers(0, 2000)) * GB // 100
            free = draw(st.integers(0, total))
            reserve = draw(st.integers(0, total))
            promised = draw(st.integers(0, total // 2 + 1))
            products = draw(st.integers(0, total // 4 + 1))
            parts.append(
                PartitionSpace(name, f"raid{p + 1}", total, free, reserve, promised, products)
            )
        nodes.append(
            NodeSpace(name, draw(st.sampled_from(LIVENESS)), draw(st.integers(0, 5)), tuple(parts))
        )
    return nodes


@st.composite
def runids(draw: st.DrawFn) -> list[ImageNeed]:
    count = draw(st.integers(0, 40))
    filters = draw(st.lists(st.sampled_from(["u", "g", "r", "i", "z", None]), min_size=1))
    return [
        ImageNeed(
            i,
            f"{700000 + i}p.fits.fz",
            draw(st.sampled_from(filters)),
            draw(st.integers(0, 400)) * GB // 100,
        )
        for i in range(count)
    ]


def check_invariants(images: list[ImageNeed], nodes: list[NodeSpace], plan: Plan) -> None:
    free = {(n.node, p.partition): p.virtual_free_bytes for n in nodes for p in n.partitions}
    reserve_room = {
        (n.node, p.partition): p.free_bytes - p.reserved_bytes for n in nodes for p in n.partitions
    }
    answering = {n.node for n in nodes if n.answers}
    used: Counter[tuple[str, str]] = Counter()
    for a in plan.assignments:
        assert a.node in answering, f"{a.node} does not answer but was chosen"
        used[(a.node, a.partition)] += a.image.needed_bytes
    for key, bytes_ in used.items():
        assert bytes_ <= free[key], f"{key} gets {bytes_} > virtual free {free[key]}"
        assert bytes_ <= reserve_room[key], f"{key} filled past its reserve"
    placed = Counter(a.image.image_id for a in plan.assignments)
    assert all(c == 1 for c in placed.values()), "a file placed twice"
    if plan.fits:
        assert set(placed) == {i.image_id for i in images}, "a file lost"
        assert {a.image for a in plan.assignments} == set(images)
    else:
        assert not plan.assignments, "an impossible plan placed files"
        assert plan.shortfall is not None and plan.shortfall.unplaced


@settings(max_examples=400, deadline=None)
@given(clusters(), runids())
def test_no_plan_overfills_loses_duplicates_or_uses_a_down_node(
    nodes: list[NodeSpace], images: list[ImageNeed]
) -> None:
    check_invariants(images, nodes, plan_placement(images, nodes))


@settings(max_examples=300, deadline=None)
@given(clusters(), runids())
def test_one_node_when_one_can_hold_the_runid_and_the_least_loaded(
    nodes: list[NodeSpace], images: list[ImageNeed]
) -> None:
    """When some answering node has a partition big enough for all the runid at once, the
    plan uses exactly one node, and no answering node holding it that way is less loaded."""
    total = sum(i.needed_bytes for i in images)
    holders = [
        n
        for n in nodes
        if n.answers and any(p.virtual_free_bytes >= max(total, 1) for p in n.partitions)
    ]
    plan = plan_placement(images, nodes)
    if not holders or not images:
        return
    assert plan.fits
    assert len(plan.nodes()) == 1
    chosen = next(n for n in nodes if n.node == plan.nodes()[0])
    assert chosen.pending_stacks <= min(n.pending_stacks for n in holders)


@settings(max_examples=300, deadline=None)
@given(clusters(), runids())
def test_impossible_only_when_the_space_is_not_there_or_too_split(
    nodes: list[NodeSpace], images: list[ImageNeed]
) -> None:
    plan = plan_placement(images, nodes)
    if plan.fits:
        return
    shortfall = plan.shortfall
    assert shortfall is not None
    available = sum(n.virtual_free_bytes for n in nodes if n.answers)
    total = sum(i.needed_bytes for i in images)
    assert shortfall.available_bytes == available
    assert shortfall.missing_bytes == max(0, total - available)
    message = shortfall.message()
    assert "cannot be placed" in message
    for n in nodes:
        if not n.answers:
            assert n.node in message, "the message names the nodes left out"


@settings(max_examples=200, deadline=None)
@given(clusters(), runids())
def test_a_filter_stays_on_one_node_when_its_node_can_hold_it(
    nodes: list[NodeSpace], images: list[ImageNeed]
) -> None:
    """A filter is never spread over more nodes than the runid; and the same inputs give the
    same plan (the planner is deterministic)."""
    plan = plan_placement(images, nodes)
    assert plan == plan_placement(list(reversed(images)), list(reversed(nodes)))
    per_filter: dict[str | None, set[str]] = {}
    for a in plan.assignments:
        per_filter.setdefault(a.image.filter, set()).add(a.node)
    for used in per_filter.values():
        assert len(used) <= len(plan.nodes())


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 10**12), st.integers(0, 10**12)),
        max_size=12,
    ),
    st.dictionaries(st.integers(0, 3), st.integers(0, 10**11), max_size=4),
    st.integers(0, 10**11),
)
def test_virtual_free_is_free_minus_reserve_promised_and_products(
    raw: list[tuple[int, int, int]], promised_raw: dict[int, int], anywhere: int
) -> None:
    disks = [
        Disk("node1", f"raid{i}", max(free, 1), free, reserve)
        for i, (_, free, reserve) in enumerate(raw)
    ]
    promised = {("node1", f"raid{i}"): b for i, b in promised_raw.items()}
    (space,) = node_spaces(
        disks, {"node1": "up"}, promised=promised, products={("node1", None): anywhere}
    )
    assert len(space.partitions) == len(disks)
    charged = 0
    for p in space.partitions:
        assert p.virtual_free_bytes >= 0
        assert p.virtual_free_bytes <= max(0, p.free_bytes - p.reserved_bytes)
        assert p.promised_bytes == promised.get(("node1", p.partition), 0)
        expected = p.free_bytes - p.reserved_bytes - p.promised_bytes - p.products_bytes
        assert p.virtual_free_bytes == max(0, expected)
        charged += p.products_bytes
    assert charged == (anywhere if disks else 0), "the node's products are charged once"


def test_needed_bytes_and_product_estimate_are_exact() -> None:
    assert needed_bytes(17_786_250_000, 4.0) == 71_145_000_000
    assert needed_bytes(3, 1.5) == 5  # rounded up: never promise less than needed
    assert stack_product_bytes([10 * GB, 5 * GB], 4.0) == 45 * GB
    assert stack_product_bytes([], 4.0) == 0


def test_a_down_node_with_all_the_space_is_not_chosen() -> None:
    big = NodeSpace("node1", "down", 0, (PartitionSpace("node1", "raid1", 10**13, 10**13),))
    small = NodeSpace("node2", "up", 0, (PartitionSpace("node2", "raid1", GB, GB),))
    images = [ImageNeed(1, "a.fits", "r", 2 * GB)]
    plan = plan_placement(images, [big, small])
    assert not plan.fits and plan.shortfall is not None
    assert plan.shortfall.missing_bytes == GB
    assert "node1" in plan.shortfall.message() and "1.000 GB missing" in plan.shortfall.message()


def test_space_split_over_small_partitions_says_so() -> None:
    nodes = [
        NodeSpace(f"node{i}", "up", 0, (PartitionSpace(f"node{i}", "raid1", 3 * GB, 3 * GB),))
        for i in (1, 2)
    ]
    plan = plan_placement([ImageNeed(1, "big.fits", "r", 4 * GB)], nodes)
    assert plan.shortfall is not None and plan.shortfall.missing_bytes == 0
    assert "too small (big.fits needs 4.000 GB; the largest is node1:raid1" in (
        plan.shortfall.message()
    )


@settings(max_examples=200, deadline=None)
@given(clusters(), runids(), st.sets(st.sampled_from([f"node{i}" for i in range(1, 9)])))
def test_a_node_already_holding_the_runid_is_preferred(
    nodes: list[NodeSpace], images: list[ImageNeed], holding: set[str]
) -> None:
    """Planning a runid filter by filter keeps it together: when a node already holding
    part of it can take the rest on one partition, the rest goes there; the rules hold."""
    plan = plan_placement(images, nodes, holding)
    check_invariants(images, nodes, plan)
    total = sum(i.needed_bytes for i in images)
    holders = [
        n.node
        for n in nodes
        if n.answers
        and n.node in holding
        and any(p.virtual_free_bytes >= max(total, 1) for p in n.partitions)
    ]
    if holders and images:
        assert plan.fits and len(plan.nodes()) == 1 and plan.nodes()[0] in holding
