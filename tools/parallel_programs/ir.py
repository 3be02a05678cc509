"""A typed intermediate form for small programs that render into C++, Java, Python, Go and JavaScript.

Names in the form are semantic roles (``acc``, ``xs``): each rendering maps them to identifiers of its
own, so the five renderings share meaning, not surface. Values stay small by construction (inputs below
1000, products reduced modulo a small prime) so 32-bit ints, JavaScript numbers and Python ints agree,
and division and modulo only see non-negative operands, where truncation and flooring agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class T(Enum):
    """Value types. INTS is a read-only input array, LIST a growable int list, MAP an int -> int map."""

    INT = "int"
    BOOL = "bool"
    STR = "str"
    CHAR = "char"
    INTS = "ints"
    LIST = "list"
    MAP = "map"


# ---- expressions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Int:
    value: int


@dataclass(frozen=True)
class Str:
    value: str


@dataclass(frozen=True)
class Char:
    value: str


@dataclass(frozen=True)
class Bool:
    value: bool


@dataclass(frozen=True)
class Var:
    name: str


ARITH = ("+", "-", "*", "/", "%")
COMPARE = ("<", "<=", ">", ">=", "==", "!=")
LOGIC = ("and", "or")


@dataclass(frozen=True)
class Bin:
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Not:
    operand: Expr


@dataclass(frozen=True)
class Index:
    """``seq[i]`` of an INTS array or a LIST."""

    seq: Expr
    index: Expr


@dataclass(frozen=True)
class Len:
    """Length of an INTS, LIST, STR or MAP (``kind`` says which)."""

    seq: Expr
    kind: T


@dataclass(frozen=True)
class CharAt:
    text: Expr
    index: Expr


@dataclass(frozen=True)
class Concat:
    """String concatenation; ``right_char`` says the right operand is a CHAR (``left_char`` the left)."""

    left: Expr
    right: Expr
    left_char: bool = False
    right_char: bool = False


@dataclass(frozen=True)
class Call:
    fn: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class MapGet:
    """``m[key]`` or ``default`` when absent."""

    map: Expr
    key: Expr
    default: Expr


@dataclass(frozen=True)
class MapHas:
    map: Expr
    key: Expr


@dataclass(frozen=True)
class Last:
    """The last element of a non-empty LIST (a stack's top)."""

    seq: Expr


@dataclass(frozen=True)
class Ord:
    """The character code of a CHAR (ASCII here)."""

    char: Expr


@dataclass(frozen=True)
class IntToStr:
    """The decimal text of an INT."""

    value: Expr


Expr = (Int | Str | Char | Bool | Var | Bin | Not | Index | Len | CharAt | Concat | Call | MapGet | MapHas | Last | Ord
        | IntToStr)


# ---- statements --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decl:
    """First assignment of a local; LIST and MAP locals start empty (``value`` None)."""

    name: str
    type: T
    value: Expr | None


@dataclass(frozen=True)
class Assign:
    name: str
    value: Expr


@dataclass(frozen=True)
class SetIndex:
    """``seq[index] = value`` on a LIST."""

    seq: str
    index: Expr
    value: Expr


@dataclass(frozen=True)
class Append:
    seq: str
    value: Expr


@dataclass(frozen=True)
class Pop:
    """Drop a LIST's last element."""

    seq: str


@dataclass(frozen=True)
class MapPut:
    map: str
    key: Expr
    value: Expr


@dataclass(frozen=True)
class For:
    """``for var in range(start, stop)`` (step 1), or downwards from ``stop - 1`` to ``start`` (step -1)."""

    var: str
    start: Expr
    stop: Expr
    body: tuple[Stmt, ...]
    step: int = 1


@dataclass(frozen=True)
class ForEach:
    """Iterate the values of an INTS array."""

    var: str
    seq: str
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class While:
    cond: Expr
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class If:
    cond: Expr
    then: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...] = ()


@dataclass(frozen=True)
class Return:
    value: Expr


@dataclass(frozen=True)
class Break:
    pass


Stmt = Decl | Assign | SetIndex | Append | Pop | MapPut | For | ForEach | While | If | Return | Break


# ---- programs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Function:
    """A function; ``name`` is a role whose words come from ``names`` (synonym word lists)."""

    name: str
    params: tuple[tuple[str, T], ...]
    returns: T
    body: tuple[Stmt, ...]
    comments: tuple[str, ...] = ()


@dataclass(frozen=True)
class Program:
    """Functions (helpers first, the entry last) and the fixed inputs ``main`` calls the entry on."""

    kind: str
    functions: tuple[Function, ...]
    inputs: tuple[tuple[Expr, ...], ...]
    roles: dict[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict, compare=False, hash=False)

    @property
    def entry(self) -> Function:
        return self.functions[-1]
