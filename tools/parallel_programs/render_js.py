"""JavaScript rendering: functions, arrays, Map, strict equality, console.log output."""

from __future__ import annotations

from tools.parallel_programs import ir
from tools.parallel_programs.render_base import CLike


class JsRenderer(CLike):
    lang = "javascript"
    ops = {"and": "&&", "or": "||", "==": "===", "!=": "!=="}

    def divide(self, left: str, right: str) -> str:
        return f"Math.floor({left} / {right})"

    def index_type(self) -> str:
        return "let"

    def e_char(self, e: ir.Char) -> str:
        return '"' + e.value + '"' if self.style.extra.get("const") else "'" + e.value + "'"

    def e_len(self, e: ir.Len) -> str:
        seq = self.wrap(e.seq, 9)
        return f"{seq}.size" if e.kind == ir.T.MAP else f"{seq}.length"

    def e_concat(self, e: ir.Concat) -> str:
        return f"{self.expr(e.left)} + {self.expr(e.right)}"

    def e_mapget(self, e: ir.MapGet) -> str:
        m, k = self.wrap(e.map, 9), self.expr(e.key)
        return f"({m}.has({k}) ? {m}.get({k}) : {self.expr(e.default)})"

    def e_maphas(self, e: ir.MapHas) -> str:
        return f"{self.wrap(e.map, 9)}.has({self.expr(e.key)})"

    def e_last(self, e: ir.Last) -> str:
        seq = self.wrap(e.seq, 9)
        return f"{seq}[{seq}.length - 1]"

    def e_ord(self, e: ir.Ord) -> str:
        return f"{self.wrap(e.char, 9)}.charCodeAt(0)"

    def e_inttostr(self, e: ir.IntToStr) -> str:
        return f"String({self.expr(e.value)})"

    def s_setindex(self, st: ir.SetIndex) -> None:
        self.emit(f"{self.n(st.seq)}[{self.expr(st.index)}] = {self.expr(st.value)};")

    def s_decl(self, st: ir.Decl) -> None:
        self.types[st.name] = st.type
        if st.value is None:
            value = "new Map()" if st.type == ir.T.MAP else "[]"
            self.emit(f"const {self.n(st.name)} = {value};")
        else:
            word = "let" if st.name in self.mutable else "const"
            self.emit(f"{word} {self.n(st.name)} = {self.expr(st.value)};")

    def s_append(self, st: ir.Append) -> None:
        self.emit(f"{self.n(st.seq)}.push({self.expr(st.value)});")

    def s_pop(self, st: ir.Pop) -> None:
        self.emit(f"{self.n(st.seq)}.pop();")

    def s_mapput(self, st: ir.MapPut) -> None:
        self.emit(f"{self.n(st.map)}.set({self.expr(st.key)}, {self.expr(st.value)});")

    def s_foreach(self, st: ir.ForEach) -> None:
        self.open_brace(f"for (const {self.n(st.var)} of {self.n(st.seq)})")
        self.block(st.body)
        self.emit("}")

    def render(self, program: ir.Program) -> str:
        first = True
        for fn in program.functions:
            if not first:
                for _ in range(self.style.blank_lines):
                    self.emit()
            first = False
            self.mutable = self.reassigned(fn.body)
            note = self.comment(fn)
            if note:
                self.emit(f"// {note}")
            params = ", ".join(self.n(p) for p, _ in fn.params)
            self.open_brace(f"function {self.n(fn.name)}({params})")
            self.block(fn.body)
            self.emit("}")
        self.emit()
        entry = program.entry
        for args in program.inputs:
            call = ", ".join(self.literal(a, t) for a, (_, t) in zip(args, entry.params))
            self.emit(f"console.log({self.n(entry.name)}({call}));")
        return self.finish()
