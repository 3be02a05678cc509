"""Python rendering: snake_case, range loops, lists and dicts, type hints or docstrings by style."""

from __future__ import annotations

from tools.parallel_programs import ir
from tools.parallel_programs.render_base import Renderer

HINTS = {ir.T.INT: "int", ir.T.BOOL: "bool", ir.T.STR: "str", ir.T.CHAR: "str", ir.T.INTS: "list[int]",
         ir.T.LIST: "list[int]", ir.T.MAP: "dict[int, int]"}


class PythonRenderer(Renderer):
    lang = "python"
    ops: dict[str, str] = {}
    not_prec = 3
    line_comment = "#"

    def divide(self, left: str, right: str) -> str:
        return f"{left} // {right}"

    def e_bool(self, e: ir.Bool) -> str:
        return "True" if e.value else "False"

    def e_not(self, e: ir.Not) -> str:
        return "not " + self.wrap(e.operand, 4)

    def e_len(self, e: ir.Len) -> str:
        return f"len({self.expr(e.seq)})"

    def e_concat(self, e: ir.Concat) -> str:
        return f"{self.expr(e.left)} + {self.expr(e.right)}"

    def e_mapget(self, e: ir.MapGet) -> str:
        return f"{self.wrap(e.map, 9)}.get({self.expr(e.key)}, {self.expr(e.default)})"

    def e_maphas(self, e: ir.MapHas) -> str:
        return f"{self.expr(e.key)} in {self.wrap(e.map, 9)}"

    def e_ord(self, e: ir.Ord) -> str:
        return f"ord({self.expr(e.char)})"

    def e_inttostr(self, e: ir.IntToStr) -> str:
        return f"str({self.expr(e.value)})"

    def s_setindex(self, st: ir.SetIndex) -> None:
        self.emit(f"{self.n(st.seq)}[{self.expr(st.index)}] = {self.expr(st.value)}")

    def e_last(self, e: ir.Last) -> str:
        return f"{self.wrap(e.seq, 9)}[-1]"

    def emptiness(self, seq, kind: ir.T, empty: bool) -> str | None:
        return f"not {self.wrap(seq, 9)}" if empty else self.wrap(seq, 9)

    def prec(self, e) -> int:
        if (isinstance(e, ir.Bin) and isinstance(e.left, ir.Len) and e.right == ir.Int(0) and e.op in ("==", ">")
                and self.style.extra.get("idiom")):
            return 3 if e.op == "==" else 9
        return 4 if isinstance(e, ir.MapHas) else super().prec(e)

    def binary(self, e: ir.Bin) -> str:
        if e.op in ("and", "or"):
            p = 1 if e.op == "or" else 2
            return f"{self.wrap(e.left, p)} {e.op} {self.wrap(e.right, p, strict=True)}"
        return super().binary(e)

    def s_decl(self, st: ir.Decl) -> None:
        self.types[st.name] = st.type
        value = ("{}" if st.type == ir.T.MAP else "[]") if st.value is None else self.expr(st.value)
        self.emit(f"{self.n(st.name)} = {value}")

    def s_assign(self, st: ir.Assign) -> None:
        self.emit(self.assign_text(self.n(st.name), st.name, st.value))

    def s_append(self, st: ir.Append) -> None:
        self.emit(f"{self.n(st.seq)}.append({self.expr(st.value)})")

    def s_pop(self, st: ir.Pop) -> None:
        self.emit(f"{self.n(st.seq)}.pop()")

    def s_mapput(self, st: ir.MapPut) -> None:
        self.emit(f"{self.n(st.map)}[{self.expr(st.key)}] = {self.expr(st.value)}")

    def s_for(self, st: ir.For) -> None:
        i = self.n(st.var)
        start, stop = self.expr(st.start), self.expr(st.stop)
        if st.step == 1:
            bounds = stop if st.start == ir.Int(0) else f"{start}, {stop}"
        else:
            low = "-1" if st.start == ir.Int(0) else self.expr(ir.Bin("-", st.start, ir.Int(1)))
            bounds = f"{self.expr(ir.Bin('-', st.stop, ir.Int(1)))}, {low}, -1"
        self.emit(f"for {i} in range({bounds}):")
        self.block(st.body)

    def s_foreach(self, st: ir.ForEach) -> None:
        self.emit(f"for {self.n(st.var)} in {self.n(st.seq)}:")
        self.block(st.body)

    def s_while(self, st: ir.While) -> None:
        self.emit(f"while {self.expr(st.cond)}:")
        self.block(st.body)

    def s_if(self, st: ir.If) -> None:
        self.emit(f"if {self.expr(st.cond)}:")
        self.block(st.then)
        orelse = st.orelse
        while orelse:
            if len(orelse) == 1 and isinstance(orelse[0], ir.If):
                self.emit(f"elif {self.expr(orelse[0].cond)}:")
                self.block(orelse[0].then)
                orelse = orelse[0].orelse
                continue
            self.emit("else:")
            self.block(orelse)
            break

    def s_return(self, st: ir.Return) -> None:
        self.emit(f"return {self.expr(st.value)}")

    def s_break(self, st: ir.Break) -> None:
        self.emit("break")

    def render(self, program: ir.Program) -> str:
        hints = self.style.extra.get("const", False)
        first = True
        for fn in program.functions:
            if not first:
                for _ in range(self.style.blank_lines):
                    self.emit()
            first = False
            note = self.comment(fn)
            docstring = note and self.style.extra.get("docstring")
            if note and not docstring:
                self.emit(f"# {note}")
            if hints:
                params = ", ".join(f"{self.n(p)}: {HINTS[t]}" for p, t in fn.params)
                self.emit(f"def {self.n(fn.name)}({params}) -> {HINTS[fn.returns]}:")
            else:
                self.emit(f"def {self.n(fn.name)}({', '.join(self.n(p) for p, _ in fn.params)}):")
            self.depth += 1
            if docstring:
                self.emit(f'"""{note}"""')
            self.depth -= 1
            self.block(fn.body)
        for _ in range(self.style.blank_lines):
            self.emit()
        entry = program.entry
        tail = self.style.comment_pick % 2 == 0
        if tail:
            self.emit('if __name__ == "__main__":')
            self.depth += 1
        for args in program.inputs:
            call = ", ".join(self.literal(a, t) for a, (_, t) in zip(args, entry.params))
            self.emit(f"print({self.n(entry.name)}({call}))")
        return self.finish()
