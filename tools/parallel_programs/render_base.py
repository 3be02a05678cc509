"""What the five renderers share: operator precedence, indentation, comment choice, the line writer."""

from __future__ import annotations

from tools.parallel_programs import ir
from tools.parallel_programs.naming import Style

PREC = {"or": 1, "and": 2, "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4, "+": 5, "-": 5, "*": 6, "/": 6,
        "%": 6}
ATOM = 9


class Renderer:
    """Render a program in one language; subclasses fill the language's syntax."""

    lang = ""
    ops: dict[str, str] = {}
    not_prec = 7  # C-like `!` binds tighter than any binary operator; Python's `not` sits below comparisons
    line_comment = "//"

    def __init__(self, style: Style):
        self.style = style
        self.lines: list[str] = []
        self.depth = 0
        self.types: dict[str, ir.T] = {}

    # ---- helpers ----
    def n(self, role: str) -> str:
        return self.style.name(role)

    def pad(self) -> str:
        return ("\t" if self.lang == "go" else " " * self.style.indent) * self.depth

    def emit(self, text: str = "") -> None:
        self.lines.append(self.pad() + text if text else "")

    def comment(self, fn: ir.Function) -> str | None:
        if not self.style.comments or not fn.comments:
            return None
        return fn.comments[self.style.comment_pick % len(fn.comments)]

    # ---- expressions ----
    def prec(self, e) -> int:
        if isinstance(e, ir.Bin):
            return PREC[e.op]
        if isinstance(e, ir.Not):
            return self.not_prec
        return ATOM

    def wrap(self, e, need: int, strict: bool = False) -> str:
        text = self.expr(e)
        p = self.prec(e)
        return f"({text})" if p < need or (strict and p == need) else text

    def emptiness(self, seq, kind: ir.T, empty: bool) -> str | None:
        """The language's idiom for ``len(seq) == 0`` / ``len(seq) > 0``, or None to spell the comparison."""
        return None

    def binary(self, e: ir.Bin) -> str:
        if (isinstance(e.left, ir.Len) and e.right == ir.Int(0) and e.op in ("==", ">")
                and self.style.extra.get("idiom")):
            text = self.emptiness(e.left.seq, e.left.kind, e.op == "==")
            if text is not None:
                return text
        p = PREC[e.op]
        # comparisons never chain; the right operand of - / % (and every comparison operand) binds strictly
        left = self.wrap(e.left, p, strict=p == 4)
        right = self.wrap(e.right, p, strict=e.op in ("-", "/", "%") or p == 4)
        if e.op == "/":
            return self.divide(left, right)
        return f"{left} {self.ops.get(e.op, e.op)} {right}"

    def divide(self, left: str, right: str) -> str:
        return f"{left} / {right}"

    def expr(self, e) -> str:
        if isinstance(e, ir.Bin):
            return self.binary(e)
        if isinstance(e, ir.Var):
            return self.n(e.name)
        if isinstance(e, ir.Int):
            return str(e.value)
        if isinstance(e, ir.Str):
            return '"' + e.value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(e, ir.Char):
            return "'" + e.value + "'"
        if isinstance(e, ir.Call):
            return self.e_call(e)
        method = getattr(self, "e_" + type(e).__name__.lower())
        return method(e)

    def e_call(self, e: ir.Call) -> str:
        return f"{self.n(e.fn)}({', '.join(self.expr(a) for a in e.args)})"

    def e_bool(self, e: ir.Bool) -> str:
        return "true" if e.value else "false"

    def ints_literal(self, values: tuple[int, ...]) -> str:
        return "[" + ", ".join(map(str, values)) + "]"

    def literal(self, value, t: ir.T) -> str:
        """A fixed input of ``main``: an int, a string or a tuple of ints."""
        if t == ir.T.INTS:
            return self.ints_literal(value)
        return self.expr(ir.Str(value) if t == ir.T.STR else ir.Int(value))

    def e_not(self, e: ir.Not) -> str:
        return "!" + self.wrap(e.operand, ATOM)

    def e_index(self, e: ir.Index) -> str:
        return f"{self.wrap(e.seq, ATOM)}[{self.expr(e.index)}]"

    def e_charat(self, e: ir.CharAt) -> str:
        return f"{self.wrap(e.text, ATOM)}[{self.expr(e.index)}]"

    def e_last(self, e: ir.Last) -> str:
        return f"{self.wrap(e.seq, ATOM)}.back()"

    @staticmethod
    def reassigned(body) -> set[str]:
        """Roles assigned after their declaration anywhere in ``body`` (loop variables included)."""
        out: set[str] = set()
        stack = list(body)
        while stack:
            st = stack.pop()
            if isinstance(st, (ir.Assign,)):
                out.add(st.name)
            if isinstance(st, (ir.For, ir.ForEach)):
                out.add(st.var)
            for part in ("body", "then", "orelse"):
                stack.extend(getattr(st, part, ()))
        return out

    # ---- statements ----
    def block(self, body) -> None:
        self.depth += 1
        for st in body:
            self.stmt(st)
        self.depth -= 1

    def assign_text(self, target: str, name: str, value) -> str:
        """``x += y`` for ``x = x + y`` when the style prefers it (not for strings on the left of +)."""
        if (self.style.compound and isinstance(value, ir.Bin) and value.op in ("+", "-", "*", "%")
                and value.left == ir.Var(name) and self.prec(value.right) > PREC[value.op]):
            if value.op in ("+", "-") and value.right == ir.Int(1) and self.lang != "python":
                return f"{target}{value.op * 2}"
            return f"{target} {value.op}= {self.expr(value.right)}"
        if (self.style.compound and isinstance(value, ir.Concat) and value.left == ir.Var(name)):
            return f"{target} += {self.concat_operand(value.right, value.right_char)}"
        return f"{target} = {self.expr(value)}"

    def concat_operand(self, e, is_char: bool) -> str:
        return self.expr(e)

    def stmt(self, st) -> None:
        getattr(self, "s_" + type(st).__name__.lower())(st)

    def render(self, program: ir.Program) -> str:
        raise NotImplementedError

    def finish(self) -> str:
        text = "\n".join(self.lines).rstrip() + "\n"
        return text


class CLike(Renderer):
    """Braces and C-style for loops (C++, Java, JavaScript)."""

    semi = ";"

    def open_brace(self, head: str) -> None:
        if self.style.brace_newline:
            self.emit(head)
            self.emit("{")
        else:
            self.emit(head + " {")

    def s_assign(self, st: ir.Assign) -> None:
        self.emit(self.assign_text(self.n(st.name), st.name, st.value) + ";")

    def s_if(self, st: ir.If) -> None:
        self.open_brace(f"if ({self.expr(st.cond)})")
        self.block(st.then)
        orelse = st.orelse
        while orelse:
            if len(orelse) == 1 and isinstance(orelse[0], ir.If):
                nested = orelse[0]
                self.close_then(f"else if ({self.expr(nested.cond)})")
                self.block(nested.then)
                orelse = nested.orelse
                continue
            self.close_then("else")
            self.block(orelse)
            break
        self.emit("}")

    def close_then(self, head: str) -> None:
        if self.style.brace_newline:
            self.emit("}")
            self.emit(head)
            self.emit("{")
        else:
            self.emit("} " + head + " {")

    def s_while(self, st: ir.While) -> None:
        self.open_brace(f"while ({self.expr(st.cond)})")
        self.block(st.body)
        self.emit("}")

    def index_type(self) -> str:
        return "int"

    def s_for(self, st: ir.For) -> None:
        i = self.n(st.var)
        self.types[st.var] = ir.T.INT
        if st.step == 1:
            head = (f"for ({self.index_type()} {i} = {self.expr(st.start)}; {i} < {self.expr(st.stop)}; "
                    f"{i}++)")
        else:
            top = self.expr(ir.Bin("-", st.stop, ir.Int(1)))
            head = f"for ({self.index_type()} {i} = {top}; {i} >= {self.expr(st.start)}; {i}--)"
        self.open_brace(head)
        self.block(st.body)
        self.emit("}")

    def s_return(self, st: ir.Return) -> None:
        self.emit(f"return {self.expr(st.value)};")

    def s_break(self, st: ir.Break) -> None:
        self.emit("break;")
