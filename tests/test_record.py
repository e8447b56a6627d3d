"""handrolled.record against its oracle, the standard library's dataclasses.

Most record classes here have a twin made by ``dataclasses.dataclass`` from the same body
(frozen and slotted, or plain for the mutable one, ``Tally``); whatever the dataclass does
(construction, equality, hashing, repr, replace, copying, pickling, the rules for fields and
defaults) the record must do too.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handrolled.record import KW_ONLY, FrozenRecordError, Record, field, fields, replace

values = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.floats(allow_nan=False),
    st.tuples(st.integers(), st.text(max_size=3)),
)


class Point(Record):
    """A record under test."""

    x: object
    y: object = 0
    label: object = "p"


@dataclasses.dataclass(frozen=True, slots=True)
class PointDC:
    x: object
    y: object = 0
    label: object = "p"


class Base(Record):
    a: object
    b: object = 1


class Child(Base):
    c: object = 2


@dataclasses.dataclass(frozen=True, slots=True)
class BaseDC:
    a: object
    b: object = 1


@dataclasses.dataclass(frozen=True, slots=True)
class ChildDC(BaseDC):
    c: object = 2


def _repr_body(obj: object) -> str:
    text = repr(obj)
    return text[text.index("(") :]


def _same_repr(ours: object, theirs: object) -> bool:
    """The record's repr is its twin's, the twin's name less its "DC" suffix."""
    return repr(ours) == repr(theirs).replace("DC(", "(", 1)


@given(values, values, values)
def test_a_record_behaves_as_a_frozen_dataclass(x, y, label) -> None:
    ours, theirs = Point(x, y, label=label), PointDC(x, y, label=label)
    assert fields(ours) == tuple(f.name for f in dataclasses.fields(theirs))
    assert _same_repr(ours, theirs)
    assert (ours == Point(x, y, label)) == (theirs == PointDC(x, y, label))
    assert hash(ours) == hash(theirs)  # both hash the tuple of the fields
    assert Point.__match_args__ == PointDC.__match_args__
    assert not hasattr(ours, "__dict__") and not hasattr(theirs, "__dict__")  # slotted


@given(values, values)
def test_defaults_positions_and_keywords_as_a_dataclass(x, y) -> None:
    assert _repr_body(Point(x)) == _repr_body(PointDC(x))
    assert _repr_body(Point(y=y, x=x)) == _repr_body(PointDC(y=y, x=x))
    for bad in ((), (1, 2, 3, 4)):
        with pytest.raises(TypeError):
            PointDC(*bad)
        with pytest.raises(TypeError):
            Point(*bad)
    with pytest.raises(TypeError):
        Point(1, z=2)
    with pytest.raises(TypeError):
        Point(1, x=2)


@given(values, values, values)
def test_equality_needs_the_very_same_class(a, b, c) -> None:
    # a dataclass compares only with its own class: a subclass with equal fields is unequal
    assert (Base(a, b) == Child(a, b)) == (BaseDC(a, b) == ChildDC(a, b)) is False
    assert (Child(a, b, c) == Child(a, b, c)) == (ChildDC(a, b, c) == ChildDC(a, b, c))
    assert Point(a) != (a, 0, "p") and PointDC(a) != (a, 0, "p")


def test_inherited_fields_come_first() -> None:
    assert fields(Child) == tuple(f.name for f in dataclasses.fields(ChildDC)) == ("a", "b", "c")
    assert _repr_body(Child(5)) == _repr_body(ChildDC(5))


@given(values, values)
def test_frozen_as_a_dataclass(x, y) -> None:
    ours, theirs = Point(x), PointDC(x)
    for obj, error in ((ours, FrozenRecordError), (theirs, dataclasses.FrozenInstanceError)):
        with pytest.raises(error):
            obj.x = y  # type: ignore[misc]
        with pytest.raises(error):
            del obj.x  # type: ignore[misc]
    # a new attribute: (a slotted frozen dataclass of 3.11 trips over its own super() here)
    with pytest.raises(AttributeError):
        ours.z = y  # type: ignore[attr-defined]
    assert issubclass(FrozenRecordError, AttributeError)


@given(values, values, values)
def test_replace_as_dataclasses_replace(x, y, label) -> None:
    ours = replace(Point(x), y=y, label=label)
    theirs = dataclasses.replace(PointDC(x), y=y, label=label)
    assert _repr_body(ours) == _repr_body(theirs)
    with pytest.raises(TypeError):
        dataclasses.replace(PointDC(x), z=1)
    with pytest.raises(TypeError):
        replace(Point(x), z=1)


@given(values, values, values)
def test_copies_and_pickles_are_equal(x, y, label) -> None:
    ours = Point(x, y, label)
    for clone in (copy.copy(ours), copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):
        assert clone == ours and type(clone) is Point and clone is not ours


def test_a_default_before_a_field_without_one_is_refused_as_dataclasses_does() -> None:
    with pytest.raises(TypeError):

        @dataclasses.dataclass(frozen=True)
        class BadDC:
            a: int = 0
            b: int

    with pytest.raises(TypeError):

        class Bad(Record):
            a: int = 0
            b: int


class Checked(Record):
    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("negative")
        object.__setattr__(self, "n", int(self.n))  # normalising, as the requests do


def test_post_init_runs_on_construction_and_on_replace() -> None:
    assert Checked(3.0).n == 3 and type(Checked(3.0).n) is int
    with pytest.raises(ValueError, match="negative"):
        Checked(-1)
    with pytest.raises(ValueError, match="negative"):
        replace(Checked(1), n=-1)


class Tally(Record, frozen=False):
    name: str
    seen: set = field(default_factory=set)


@dataclasses.dataclass
class TallyDC:
    name: str
    seen: set = dataclasses.field(default_factory=set)


def test_a_mutable_record_is_a_plain_dataclass() -> None:
    ours, theirs = Tally("a"), TallyDC("a")
    ours.seen.add(1)
    theirs.seen.add(1)
    assert Tally("b").seen == TallyDC("b").seen == set()  # a fresh set each time
    ours.name = theirs.name = "c"
    assert _repr_body(ours) == _repr_body(theirs)
    assert Tally.__hash__ is None and TallyDC.__hash__ is None  # mutable, compared by value
    assert ours == Tally("c", {1})


def test_frozenness_is_inherited_and_cannot_change() -> None:
    class Sub(Tally):
        extra: int = 0

    Sub("x").extra = 1  # mutable as its base
    with pytest.raises(TypeError):

        class Frozen(Tally, frozen=True):
            pass

    with pytest.raises(TypeError):

        @dataclasses.dataclass(frozen=True)
        class FrozenDC(TallyDC):
            pass


class Login(Record):
    user: str
    secret: str = field(repr=False)
    tries: int = field(default=3)


@dataclasses.dataclass(frozen=True, slots=True)
class LoginDC:
    user: str
    secret: str = dataclasses.field(repr=False)
    tries: int = dataclasses.field(default=3)


class Relogin(Login):
    note: str = ""


@given(st.text(max_size=5), st.text(min_size=1, max_size=8))
def test_field_options_as_dataclasses_field(user, secret) -> None:
    ours, theirs = Login(user, secret), LoginDC(user, secret)
    assert _repr_body(ours) == _repr_body(theirs)  # the secret is left out of both
    assert ours.tries == theirs.tries == 3 and ours.secret == secret
    assert ours != Login(user, secret + "x")  # compared all the same
    assert "secret=" not in repr(Relogin(user, secret))  # a subclass keeps it hidden
    with pytest.raises(ValueError):
        field(default=1, default_factory=list)


class Envelope(Record):
    server: str
    port: int = 25
    _: KW_ONLY
    sender: str
    copies: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class EnvelopeDC:
    server: str
    port: int = 25
    _: dataclasses.KW_ONLY
    sender: str
    copies: int = 1


def test_keyword_only_fields_as_dataclasses_kw_only() -> None:
    assert _repr_body(Envelope("mx", sender="a")) == _repr_body(EnvelopeDC("mx", sender="a"))
    assert fields(Envelope) == tuple(f.name for f in dataclasses.fields(EnvelopeDC))
    for cls in (Envelope, EnvelopeDC):
        with pytest.raises(TypeError):
            cls("mx", 25, "a")  # sender is keyword-only
        with pytest.raises(TypeError):
            cls("mx")  # and required
    assert replace(Envelope("mx", sender="a"), copies=2).copies == 2


class Kinds(Record):
    tag: ClassVar[str] = "k"  # a class attribute, not a field
    n: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class KindsDC:
    tag: ClassVar[str] = "k"
    n: int = 0


def test_a_classvar_is_no_field_as_in_dataclasses() -> None:
    assert fields(Kinds) == tuple(f.name for f in dataclasses.fields(KindsDC)) == ("n",)
    assert Kinds.tag == KindsDC.tag == "k" and _same_repr(Kinds(1), KindsDC(1))
    assert Kinds(1) == Kinds(1) and hash(Kinds(1)) == hash(KindsDC(1))


class LateEnvelope(Envelope):
    note: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class LateEnvelopeDC(EnvelopeDC):
    note: str = ""


def test_keyword_only_fields_stay_so_in_a_subclass_and_are_not_matched_by_place() -> None:
    assert Envelope.__match_args__ == EnvelopeDC.__match_args__ == ("server", "port")
    assert LateEnvelope.__match_args__ == LateEnvelopeDC.__match_args__
    assert _same_repr(
        LateEnvelope("mx", 2, "n", sender="a"), LateEnvelopeDC("mx", 2, "n", sender="a")
    )
    for cls in (LateEnvelope, LateEnvelopeDC):
        with pytest.raises(TypeError):
            cls("mx", 25, "a", 1)  # sender and copies are keyword-only in the subclass too


class Required(Base):
    b: object  # the base's default taken away again


@dataclasses.dataclass(frozen=True, slots=True)
class RequiredDC(BaseDC):
    b: object


class Shown(Login):
    secret: str = "s"  # declared again, plainly: shown again


@dataclasses.dataclass(frozen=True, slots=True)
class ShownDC(LoginDC):
    secret: str = "s"


def test_a_field_declared_again_takes_the_new_declaration_as_in_dataclasses() -> None:
    for cls in (Required, RequiredDC):
        with pytest.raises(TypeError):
            cls(1)  # b has no default any more
    assert _same_repr(Required(1, 2), RequiredDC(1, 2))
    assert _same_repr(Shown("u"), ShownDC("u")) and "secret='s'" in repr(Shown("u"))


def test_a_mutable_default_is_refused_as_dataclasses_does() -> None:
    with pytest.raises(ValueError):

        @dataclasses.dataclass(frozen=True)
        class BadDC:
            items: list = []  # noqa: RUF008 (the mistake under test)

    with pytest.raises(ValueError):

        class Bad(Record):
            items: list = []


class Loose(Record):
    x: int

    def __eq__(self, other: object) -> bool:  # equal whatever x is
        return isinstance(other, Loose)


@dataclasses.dataclass(frozen=True, slots=True)
class LooseDC:
    x: int

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LooseDC)


def test_a_frozen_record_with_its_own_eq_keeps_a_hash_as_a_frozen_dataclass() -> None:
    assert Loose(1) == Loose(2) and LooseDC(1) == LooseDC(2)
    assert hash(Loose(3)) == hash(LooseDC(3)) == hash((3,))


def test_a_subclass_init_calling_super_init_builds_the_base_init() -> None:
    class Base2(Record):  # made here, so no instance of it exists yet
        x: object

    class Scaled(Base2):
        def __init__(self, x: object) -> None:  # a subclass's own __init__ over the record's
            super().__init__(x * 10)

    assert Scaled(1).x == 10 and Scaled(1).x == 10  # the first call leaves Scaled's own alone
    assert Base2(1).x == 1
