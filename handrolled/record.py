"""Records: the contract's value types, with a frozen dataclass's behaviour and no start-up cost.

Pure: no I/O.

Why not ``dataclasses``
-----------------------
``@dataclass(frozen=True)`` writes the source of six methods for each class (``__init__``,
``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__``, ``__delattr__``) and compiles each when
the class is created, and the module imports ``inspect``.  On this project's 2-core machine
that was about 1 ms a class, 30 classes on a traceroute's path: 44 ms of the 85 ms that
``wiretwin traceroute`` spent before its first probe, where traceroute(8) sends within a few ms
(benchmarks/bench_startup.py, issue 15).  A ``Record`` subclass is made by reading its
annotations once (tens of microseconds): ``__repr__``, ``__eq__``, ``__hash__`` and
immutability are shared methods of this base, and only ``__init__`` is compiled, the first time
the class is instantiated, so a run pays for the types it uses and no others.

What a record does (the frozen dataclass's rules; tests/test_record.py holds them against
``dataclasses`` itself)
------------------------------------------------------------------------------------------
- Fields are the class's annotated names in order, after those of its record bases; a name
  given a value in the class body has that default.  A field without a default may not
  follow one with a default (``TypeError`` when the class is made).  ``field(default=...,
  default_factory=..., repr=...)`` gives a field dataclasses.field's options: a default made
  afresh for each instance, a field left out of ``repr`` (secrets stay out of logs).  After
  ``_: KW_ONLY`` the fields are keyword-only (and exempt from that rule), as in dataclasses.
- ``__init__(self, *fields)`` takes them positionally or by name, then calls
  ``__post_init__()`` if the class has one (it may set fields with ``object.__setattr__``).
- Equal when of the very same class with equal fields; hashed by the fields; ``repr`` is
  ``Name(a=1, b='x')``; ``__match_args__`` is the field names.
- Frozen: assigning or deleting an attribute raises ``FrozenRecordError`` (an
  ``AttributeError``, as ``dataclasses.FrozenInstanceError`` is).  ``class C(Record,
  frozen=False)`` makes a mutable record instead: assignable, and unhashable (``__hash__``
  is None), as a non-frozen dataclass with ``eq=True``.  A subclass is what its base is; it
  may not change that.
- ``replace(record, **changes)`` and ``fields(record_or_class)`` stand in for
  ``dataclasses.replace`` and ``dataclasses.fields`` (names, not Field objects); records copy
  and pickle (their state is the fields' values, in order).

Records are slotted, as ``dataclass(slots=True)`` makes them, but made once: the metaclass
writes ``__slots__`` into the class body before the class exists (moving the defaults, which
would clash with the slots, into ``__record_defaults__``), where ``dataclass(slots=True)``
makes the class a second time.
"""

from __future__ import annotations

from operator import attrgetter  # loaded already: collections, which every start imports, uses it

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a client never uses it)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar, dataclass_transform

    R = TypeVar("R", bound="Record")
else:

    def dataclass_transform(**_: object):  # type checkers read Record as dataclass-like
        return lambda cls: cls


__all__ = ["KW_ONLY", "FrozenRecordError", "Record", "field", "fields", "replace"]


class KW_ONLY:
    """``_: KW_ONLY`` in a record's body: the fields after it are keyword-only, as
    ``dataclasses.KW_ONLY`` makes them (read from the annotation's text, never called)."""


class FrozenRecordError(AttributeError):
    """An assignment to, or deletion of, an attribute of a frozen record."""


_NO_DEFAULT: Any = object()


class field:
    """A field's options, as ``dataclasses.field``'s: ``default``, ``default_factory`` (a
    default made afresh for each instance: ``addresses: set[str] = field(default_factory=set)``),
    ``repr=False`` (left out of ``repr``: secrets stay out of logs)."""

    __slots__ = ("default", "default_factory", "repr")

    def __init__(
        self,
        *,
        default: object = _NO_DEFAULT,
        default_factory: Callable[[], object] | None = None,
        repr: bool = True,
    ) -> None:
        if default is not _NO_DEFAULT and default_factory is not None:
            raise ValueError("cannot specify both default and default_factory")
        self.default, self.default_factory, self.repr = default, default_factory, repr


def _first_init(self: Record, *args: object, **kwargs: object) -> None:
    """Compile the ``__init__`` of the class this stub stands in (the first in ``self``'s MRO
    that still has it: ``type(self)``, or a base a subclass's own ``__init__`` calls through
    ``super()``), put it in that class, and run it."""
    cls = next(c for c in type(self).__mro__ if c.__dict__.get("__init__") is _first_init)
    cls.__init__ = init = _compile_init(cls)
    init(self, *args, **kwargs)


def _compile_init(cls: type[Record]) -> Callable[..., None]:
    """``def __init__(self, a, b=<default>): _set(self, 'a', a); ...`` (``_set`` is
    ``object.__setattr__``, past the frozen record's own): the one piece of generated code, as
    fast as a hand-written ``__init__``."""
    scope: dict[str, object] = {"_set": object.__setattr__}
    params, keywords, body = ["self"], [], []
    for i, name in enumerate(cls.__record_fields__):
        default = cls.__record_defaults__.get(name, _NO_DEFAULT)
        listed = keywords if name in cls.__record_keyword_only__ else params
        if default is _NO_DEFAULT:
            listed.append(name)
        else:
            scope[f"_default_{i}"] = default
            listed.append(f"{name}=_default_{i}")
            if isinstance(default, field):  # a fresh value each time: the field stands in
                make = f"_default_{i}.default_factory()"
                body.append(f"    if {name} is _default_{i}: {name} = {make}")
        body.append(f"    _set(self, {name!r}, {name})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    body = body or ["    pass"]
    if keywords:
        params += ["*", *keywords]
    source = f"def __init__({', '.join(params)}):\n" + "\n".join(body) + "\n"
    exec(compile(source, f"<record {cls.__module__}.{cls.__qualname__}>", "exec"), scope)
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init  # type: ignore[return-value]


class _RecordType(type):
    """Makes each record class once, with its fields' ``__slots__`` and a stub ``__init__``."""

    def __new__(
        mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any], *, frozen: bool | None = None
    ) -> _RecordType:
        names: list[str] = []
        defaults: dict[str, object] = {}
        hidden: set[str] = set()
        keyword_only: set[str] = set()
        inherited = None  # the record bases' frozen flag (Record's own is None: not yet said)
        for base in reversed(bases):  # each record base holds its own bases' fields already
            if not isinstance(base, _RecordType):
                continue
            names += [n for n in base.__record_fields__ if n not in names]
            defaults.update(base.__record_defaults__)
            hidden |= set(base.__record_fields__) - set(base.__record_shown__)
            keyword_only |= base.__record_keyword_only__
            if base.__record_frozen__ is not None:
                inherited = base.__record_frozen__
        if "__annotate__" in ns and "__annotations__" not in ns:  # Python 3.14, no PEP 563
            raise TypeError(f"{name}: a record's module needs `from __future__ import annotations`")
        if frozen is None:
            frozen = True if inherited is None else inherited
        elif inherited is not None and frozen != inherited:  # dataclasses' rule too
            raise TypeError(f"{name}: frozen={frozen} under a frozen={inherited} record")
        own: list[str] = []
        after_marker = False
        for attr, annotation in ns.get("__annotations__", {}).items():
            if str(annotation).startswith(("ClassVar", "typing.ClassVar")):
                continue
            if str(annotation) in ("KW_ONLY", "dataclasses.KW_ONLY"):  # `_: KW_ONLY`
                after_marker = True
                continue
            if after_marker:
                keyword_only.add(attr)
            if attr not in names:
                names.append(attr)
                own.append(attr)
            value = ns.pop(attr, _NO_DEFAULT)  # a slot and a class attribute cannot share a name
            shown = True
            if isinstance(value, field):
                shown = value.repr
                value = value if value.default_factory is not None else value.default
            if shown:
                hidden.discard(attr)
            else:
                hidden.add(attr)
            if value is not _NO_DEFAULT and type(value).__hash__ is None:  # dataclasses' rule
                raise ValueError(
                    f"{name}.{attr}: mutable default {type(value).__name__}: use"
                    " field(default_factory=...)"
                )
            if value is _NO_DEFAULT:
                defaults.pop(attr, None)
            else:
                defaults[attr] = value  # a field with a default_factory stands for it
        positional = [n for n in names if n not in keyword_only]
        for i in range(1, len(positional)):  # dataclasses' rule (keyword-only fields aside)
            if positional[i - 1] in defaults and positional[i] not in defaults:
                raise TypeError(
                    f"{name}: field {positional[i]!r} without a default follows"
                    f" {positional[i - 1]!r}"
                )
        ns["__slots__"] = tuple(own)
        ns["__record_fields__"] = tuple(names)
        ns["__match_args__"] = tuple(positional)  # keyword-only fields are not matched by place
        ns["__record_shown__"] = tuple(n for n in names if n not in hidden)
        ns["__record_keyword_only__"] = frozenset(keyword_only)
        # the fields' values as a tuple, for eq and hash: attrgetter does it in C
        many = attrgetter(*names) if len(names) > 1 else None
        ns["__record_values__"] = staticmethod(
            many or (lambda record, names=tuple(names): tuple(getattr(record, n) for n in names))
        )
        ns["__record_defaults__"] = defaults
        ns["__record_frozen__"] = frozen if bases else None  # Record itself leaves it open
        ns.setdefault("__init__", _first_init)
        if frozen and "__eq__" in ns and "__hash__" not in ns:
            # Python drops the hash of a class that defines __eq__; a frozen dataclass keeps one
            ns["__hash__"] = _hash
        if not frozen:
            ns["__setattr__"] = object.__setattr__
            ns["__delattr__"] = object.__delattr__
            ns["__hash__"] = None  # mutable and compared by value, as dataclasses does
        return super().__new__(mcls, name, bases, ns)


def _hash(record: Record) -> int:
    return hash(record.__record_values__(record))


@dataclass_transform(frozen_default=True)
class Record(metaclass=_RecordType):
    """Base of the contract's value types: subclass it and annotate the fields."""

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__record_shown__)
        return f"{type(self).__qualname__}({shown})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self.__record_values__(self) == other.__record_values__(other)
        return NotImplemented

    __hash__ = _hash

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenRecordError(f"cannot assign to field {name!r} of a frozen record")

    def __delattr__(self, name: str) -> None:
        raise FrozenRecordError(f"cannot delete field {name!r} of a frozen record")

    def __getstate__(self) -> tuple:  # slots, no __dict__: copy and pickle go through these
        return self.__record_values__(self)

    def __setstate__(self, state: tuple) -> None:
        for name, value in zip(self.__record_fields__, state, strict=True):
            object.__setattr__(self, name, value)


def fields(record: Record | type[Record]) -> tuple[str, ...]:
    """The field names of a record or record class, in order (``dataclasses.fields``)."""
    return record.__record_fields__


def replace(record: R, /, **changes: object) -> R:
    """A new record of the same class, ``changes`` applied, ``__post_init__`` run again
    (``dataclasses.replace``); an unknown field is the ``__init__``'s TypeError."""
    values = {name: getattr(record, name) for name in record.__record_fields__}
    return type(record)(**{**values, **changes})
