"""Strict dataclass decoding and encoding (common.wire.from_wire, to_wire): dicts only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import cbor2
import pytest

from common import wire
from common.errors import InvalidArgument


@dataclass(frozen=True, slots=True, kw_only=True)
class Inner:
    n: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    name: str
    count: int
    ratio: float
    flag: bool
    tags: list[str]
    env: dict[str, int]
    inner: Inner
    note: str | None = None
    mode: Literal["r", "w"] = "r"
    prio: Literal[1, 2] = 1
    level: int = 3
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


@dataclass(frozen=True, slots=True, kw_only=True)
class Tree:
    children: list[Tree] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class MaybeInner:
    inner: Inner | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Item:
    name: str
    size: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Outer:
    items: list[Item]
    groups: dict[str, list[Item | None]] = field(default_factory=dict)
    pick: Item | int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    name: str
    kids: list[Node] = field(default_factory=list)
    next: Node | None = None
    by_name: dict[str, Node] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ordered:
    """Hints that typing calls equal although their order makes them decode differently."""

    a: float | int = 0
    b: int | float = 0
    c: Literal[1, 2] = 1
    d: Literal[2, 1] = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Positive:
    n: int

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise InvalidArgument(f"Positive: n must be > 0, got {self.n}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Choice:
    value: Positive | int
    strict: Positive | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Empty:
    fds: list[int] = field(default_factory=list, metadata={"wire": False})


GOOD: dict[str, Any] = {
    "name": "x",
    "count": 1,
    "ratio": 0.5,
    "flag": True,
    "tags": ["a", "b"],
    "env": {"A": 1},
    "inner": {"n": 2},
}
DROP = object()


def _body(**patch: Any) -> dict[str, Any]:
    body = {**GOOD, **patch}
    return {k: v for k, v in body.items() if v is not DROP}


def _nest(levels: int) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(levels):
        body = {"children": [body]}
    return body


# -- from_wire ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        pytest.param({"extra": 1}, r"^Sample: unknown fields \['extra'\]", id="unknown-field"),
        pytest.param({"fds": [3]}, r"^Sample: unknown fields \['fds'\]", id="non-wire-field-sent"),
        pytest.param({"name": DROP, "count": DROP}, r"^Sample: missing fields \['name', 'count'\]", id="missing"),
        pytest.param({"count": "1"}, r"^Sample\.count: want int, got str", id="str-for-int"),
        pytest.param({"count": True}, r"^Sample\.count: want int, got bool", id="bool-for-int"),
        pytest.param({"count": 1.0}, r"^Sample\.count: want int, got float", id="float-for-int"),
        pytest.param({"flag": 1}, r"^Sample\.flag: want bool, got int", id="int-for-bool"),
        pytest.param({"name": ["x"]}, r"^Sample\.name: want str, got list", id="list-for-str"),
        pytest.param({"name": None}, r"^Sample\.name: want str, got null", id="null-for-str"),
        pytest.param({"ratio": "0.5"}, r"^Sample\.ratio: want float, got str", id="str-for-float"),
        pytest.param({"ratio": True}, r"^Sample\.ratio: want float, got bool", id="bool-for-float"),
        pytest.param({"tags": "ab"}, r"^Sample\.tags: want a list, got str", id="str-for-list"),
        pytest.param({"tags": ["a", 2]}, r"^Sample\.tags\[1\]: want str, got int", id="list-element"),
        pytest.param({"env": {"A": "1"}}, r"^Sample\.env\['A'\]: want int, got str", id="dict-value"),
        pytest.param({"env": {1: 1}}, r"^Sample\.env key: want str, got int", id="dict-key"),
        pytest.param({"env": [1]}, r"^Sample\.env: want a map, got list", id="list-for-dict"),
        pytest.param({"inner": {"n": "2"}}, r"^Sample\.inner\.n: want int, got str", id="nested-type"),
        pytest.param({"inner": {"n": 1, "m": 2}}, r"^Sample\.inner: unknown fields \['m'\]", id="nested-unknown"),
        pytest.param({"inner": {}}, r"^Sample\.inner: missing fields \['n'\]", id="nested-missing"),
        pytest.param({"inner": 5}, r"^Sample\.inner: want a map, got int", id="nested-not-map"),
        pytest.param({"note": 5}, r"^Sample\.note: want str\b.*, got int", id="optional-wrong"),
        pytest.param({"mode": "x"}, r"^Sample\.mode: want one of \['r', 'w'\]", id="literal-value"),
        pytest.param({"prio": True}, r"^Sample\.prio: want one of \[1, 2\]", id="literal-bool-for-int"),
    ],
)
def test_from_wire_rejections(patch: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        wire.from_wire(Sample, _body(**patch))


@pytest.mark.parametrize("body", [None, [GOOD], "x", 3])
def test_from_wire_refuses_non_map_body(body: object) -> None:
    with pytest.raises(InvalidArgument, match="^Sample: want a map"):
        wire.from_wire(Sample, body)


def test_from_wire_where_names_the_caller() -> None:
    with pytest.raises(InvalidArgument, match=r"^Demo\.Call\.count: "):
        wire.from_wire(Sample, _body(count="x"), where="Demo.Call")


def test_from_wire_accepts_and_applies_defaults() -> None:
    got = wire.from_wire(Sample, _body())
    assert got == Sample(name="x", count=1, ratio=0.5, flag=True, tags=["a", "b"], env={"A": 1}, inner=Inner(n=2))
    assert (got.note, got.mode, got.prio, got.level, got.fds) == (None, "r", 1, 3, [])


def test_from_wire_int_for_float_becomes_float() -> None:
    got = wire.from_wire(Sample, _body(ratio=2))
    assert got.ratio == 2.0
    assert type(got.ratio) is float


@pytest.mark.parametrize("note", [None, "hello"])
def test_from_wire_optional(note: str | None) -> None:
    assert wire.from_wire(Sample, _body(note=note)).note == note


def test_from_wire_literal() -> None:
    got = wire.from_wire(Sample, _body(mode="w", prio=2))
    assert (got.mode, got.prio) == ("w", 2)


def test_from_wire_recursive_type_within_depth() -> None:
    got = wire.from_wire(Tree, _nest(10))
    for _ in range(10):
        (got,) = got.children
    assert got == Tree()


def test_from_wire_refuses_deep_nesting() -> None:
    with pytest.raises(InvalidArgument, match=f"nested deeper than {wire.MAX_DEPTH}"):
        wire.from_wire(Tree, _nest(wire.MAX_DEPTH))


def test_from_wire_optional_nested_error_names_field_path() -> None:
    with pytest.raises(InvalidArgument, match=r"^MaybeInner\.inner\.n: want int, got str"):
        wire.from_wire(MaybeInner, {"inner": {"n": "2"}})
    assert wire.from_wire(MaybeInner, {"inner": None}) == MaybeInner()
    assert wire.from_wire(MaybeInner, {"inner": {"n": 1}}) == MaybeInner(inner=Inner(n=1))


def _chain(levels: int) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "x"}
    for _ in range(levels):
        body = {"name": "x", "next": body}
    return body


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# Pinned from the decoder before it was compiled: every error names the full path, once.
@pytest.mark.parametrize(
    ("cls", "body", "message"),
    [
        pytest.param(
            Outer,
            {"items": [{"name": "a"}, {"name": "b"}, {"name": 3}]},
            "Outer.items[2].name: want str, got int",
            id="list-item-field",
        ),
        pytest.param(
            Outer,
            {"items": [], "groups": {"g": [None, {"name": "a", "size": True}]}},
            "Outer.groups['g'][1].size: want int, got bool",
            id="dict-list-optional-field",
        ),
        pytest.param(
            Outer,
            {"items": [], "groups": {"g": [None, {"name": "a", "zz": 1}]}},
            "Outer.groups['g'][1]: unknown fields ['zz']",
            id="nested-unknown",
        ),
        pytest.param(
            Outer,
            {"items": [], "groups": {"g": [{}]}},
            "Outer.groups['g'][0]: missing fields ['name']",
            id="nested-missing",
        ),
        pytest.param(Outer, {"items": [], "groups": {7: []}}, "Outer.groups key: want str, got int", id="dict-key"),
        pytest.param(
            Outer, {"items": [], "groups": {"g": "x"}}, "Outer.groups['g']: want a list, got str", id="dict-value"
        ),
        pytest.param(Outer, {"items": [1]}, "Outer.items[0]: want a map, got int", id="list-item-not-map"),
        pytest.param(
            Node,
            {
                "name": "r",
                "kids": [{"name": "a"}, {"name": "b", "next": {"name": "c", "by_name": {"k": {"name": None}}}}],
            },
            "Node.kids[1].next.by_name['k'].name: want str, got null",
            id="recursive-path",
        ),
        pytest.param(
            Node,
            _chain(wire.MAX_DEPTH),
            "Node" + ".next" * wire.MAX_DEPTH + f".name: nested deeper than {wire.MAX_DEPTH}",
            id="too-deep-optional",
        ),
        pytest.param(
            Tree,
            _nest(17),
            "Tree" + ".children[0]" * 16 + f".children: nested deeper than {wire.MAX_DEPTH}",
            id="too-deep-list",
        ),
        pytest.param(Ordered, {"a": "x"}, "Ordered.a: want float | int, got str", id="union-order-a"),
        pytest.param(Ordered, {"b": "x"}, "Ordered.b: want int | float, got str", id="union-order-b"),
        pytest.param(Ordered, {"c": 3}, "Ordered.c: want one of [1, 2], got 3", id="literal-order-c"),
        pytest.param(Ordered, {"d": 3}, "Ordered.d: want one of [2, 1], got 3", id="literal-order-d"),
        pytest.param(
            Choice, {"value": 1, "strict": {"n": 0}}, "Positive: n must be > 0, got 0", id="post-init-outside-union"
        ),
    ],
)
def test_from_wire_error_names_full_path(cls: type, body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        wire.from_wire(cls, body)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("body", "option"),
    [({"items": [], "pick": "x"}, "str"), ({"items": [], "pick": {"name": 1}}, "dict")],
)
def test_from_wire_union_error_names_the_union(body: dict[str, Any], option: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        wire.from_wire(Outer, body)
    assert str(info.value) == f"Outer.pick: want {_qualified(Item)} | int | None, got {option}"


def test_from_wire_depth_limit_is_exact() -> None:
    wire.from_wire(Tree, _nest(16))
    wire.from_wire(Node, _chain(wire.MAX_DEPTH - 1))
    with pytest.raises(InvalidArgument, match="nested deeper"):
        wire.from_wire(Tree, _nest(17))


def test_from_wire_union_order_is_kept() -> None:
    got = wire.from_wire(Ordered, {"a": 1, "b": 1})
    assert (got.a, type(got.a), got.b, type(got.b)) == (1.0, float, 1, int)


def test_from_wire_union_skips_an_option_whose_checks_refuse() -> None:
    assert wire.from_wire(Choice, {"value": {"n": 2}}) == Choice(value=Positive(n=2))
    assert wire.from_wire(Choice, {"value": 5}) == Choice(value=5)
    with pytest.raises(InvalidArgument) as info:
        wire.from_wire(Choice, {"value": {"n": -1}})
    assert str(info.value) == f"Choice.value: want {_qualified(Positive)} | int, got dict"


def test_recursive_dataclass_round_trip() -> None:
    leaf = Node(name="leaf")
    tree = Node(
        name="root",
        kids=[Node(name="a", kids=[leaf]), Node(name="b", next=Node(name="c", by_name={"k": leaf}))],
        next=Node(name="n", next=leaf),
        by_name={"x": Node(name="x", kids=[leaf, leaf])},
    )
    assert wire.from_wire(Node, cbor2.loads(cbor2.dumps(wire.to_wire(tree)))) == tree


def test_from_wire_twice_gives_equal_independent_results() -> None:
    body = _body(tags=["a", "b"], env={"A": 1}, note="n")
    first = wire.from_wire(Sample, body)
    with pytest.raises(InvalidArgument):
        wire.from_wire(Sample, _body(tags=["a", 2]))
    second = wire.from_wire(Sample, body)
    assert first == second
    assert first.tags is not second.tags and first.tags is not body["tags"]
    first.tags.append("c")
    assert second.tags == ["a", "b"] == body["tags"]
    assert wire.from_wire(Node, {"name": "r"}) == wire.from_wire(Node, {"name": "r"}) == Node(name="r")


def test_from_wire_class_without_wire_fields() -> None:
    assert wire.from_wire(Empty, {}) == wire.from_wire(Empty, {}) == Empty()
    with pytest.raises(InvalidArgument, match=r"^Empty: unknown fields \['fds'\]$"):
        wire.from_wire(Empty, {"fds": [1]})


# -- to_wire -----------------------------------------------------------------------------------


def test_to_wire_leaves_out_non_wire_fields_and_round_trips() -> None:
    obj = Sample(name="x", count=1, ratio=0.5, flag=False, tags=["t"], env={"A": 1}, inner=Inner(n=2), fds=[7, 8])
    body = wire.to_wire(obj)
    assert body == {
        "name": "x",
        "count": 1,
        "ratio": 0.5,
        "flag": False,
        "tags": ["t"],
        "env": {"A": 1},
        "inner": {"n": 2},
        "note": None,
        "mode": "r",
        "prio": 1,
        "level": 3,
    }
    assert wire.from_wire(Sample, cbor2.loads(cbor2.dumps(body))) == Sample(
        name="x", count=1, ratio=0.5, flag=False, tags=["t"], env={"A": 1}, inner=Inner(n=2)
    )


def test_to_wire_recurses_into_containers() -> None:
    assert wire.to_wire({"k": (Inner(n=1), [Inner(n=2)])}) == {"k": [{"n": 1}, [{"n": 2}]]}
    assert wire.to_wire(Inner) is Inner  # a class is not an instance


def test_to_wire_per_class_field_lists_do_not_mix() -> None:
    assert wire.to_wire(Empty(fds=[3])) == {}
    assert wire.to_wire([Item(name="a"), Empty(), Inner(n=1)]) == [{"name": "a", "size": 0}, {}, {"n": 1}]
    assert wire.to_wire(Node(name="r", kids=[Node(name="k")])) == wire.to_wire(Node(name="r", kids=[Node(name="k")]))
