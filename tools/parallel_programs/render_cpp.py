"""C++ rendering: std::vector / std::string / std::unordered_map, iostream output."""

from __future__ import annotations

from tools.parallel_programs import ir
from tools.parallel_programs.render_base import CLike

TYPES = {ir.T.INT: "int", ir.T.BOOL: "bool", ir.T.STR: "std::string", ir.T.CHAR: "char",
         ir.T.INTS: "std::vector<int>", ir.T.LIST: "std::vector<int>", ir.T.MAP: "std::unordered_map<int, int>"}
PARAMS = {ir.T.INTS: "const std::vector<int>&", ir.T.STR: "const std::string&"}


class CppRenderer(CLike):
    lang = "cpp"
    ops = {"and": "&&", "or": "||"}

    def emptiness(self, seq, kind: ir.T, empty: bool) -> str | None:
        return f"{'' if empty else '!'}{self.wrap(seq, 9)}.empty()"

    def e_len(self, e: ir.Len) -> str:
        return f"static_cast<int>({self.wrap(e.seq, 9)}.size())"

    def e_concat(self, e: ir.Concat) -> str:
        left = self.expr(e.left)
        if e.left_char and e.right_char:
            left = f"std::string(1, {left})"
        return f"{left} + {self.expr(e.right)}"

    def e_mapget(self, e: ir.MapGet) -> str:
        m, k = self.wrap(e.map, 9), self.expr(e.key)
        return f"({m}.count({k}) ? {m}.at({k}) : {self.expr(e.default)})"

    def e_maphas(self, e: ir.MapHas) -> str:
        return f"{self.wrap(e.map, 9)}.count({self.expr(e.key)}) > 0"

    def e_ord(self, e: ir.Ord) -> str:
        return f"static_cast<int>({self.expr(e.char)})"

    def e_inttostr(self, e: ir.IntToStr) -> str:
        return f"std::to_string({self.expr(e.value)})"

    def s_setindex(self, st: ir.SetIndex) -> None:
        self.emit(f"{self.n(st.seq)}[{self.expr(st.index)}] = {self.expr(st.value)};")

    def s_decl(self, st: ir.Decl) -> None:
        self.types[st.name] = st.type
        if st.value is None:
            self.emit(f"{TYPES[st.type]} {self.n(st.name)};")
        else:
            self.emit(f"{TYPES[st.type]} {self.n(st.name)} = {self.expr(st.value)};")

    def s_append(self, st: ir.Append) -> None:
        self.emit(f"{self.n(st.seq)}.push_back({self.expr(st.value)});")

    def s_pop(self, st: ir.Pop) -> None:
        self.emit(f"{self.n(st.seq)}.pop_back();")

    def s_mapput(self, st: ir.MapPut) -> None:
        self.emit(f"{self.n(st.map)}[{self.expr(st.key)}] = {self.expr(st.value)};")

    def s_foreach(self, st: ir.ForEach) -> None:
        self.open_brace(f"for (int {self.n(st.var)} : {self.n(st.seq)})")
        self.block(st.body)
        self.emit("}")

    def ints_literal(self, values: tuple[int, ...]) -> str:
        return "{" + ", ".join(map(str, values)) + "}"

    def render(self, program: ir.Program) -> str:
        kinds = {t for fn in program.functions for _, t in fn.params} | {fn.returns for fn in program.functions}
        headers = ["iostream", "vector"] if ir.T.INTS in kinds or "T.LIST" in repr(program.functions) else ["iostream"]
        if ir.T.STR in kinds or "T.STR" in repr(program.functions):
            headers.append("string")
        if "T.MAP" in repr(program.functions):
            headers.append("unordered_map")
        for h in sorted(headers):
            self.emit(f"#include <{h}>")
        for fn in program.functions:
            for _ in range(self.style.blank_lines):
                self.emit()
            note = self.comment(fn)
            if note:
                self.emit(f"// {note}")
            params = ", ".join(f"{PARAMS.get(t, TYPES[t])} {self.n(p)}" for p, t in fn.params)
            self.open_brace(f"{TYPES[fn.returns]} {self.n(fn.name)}({params})")
            self.block(fn.body)
            self.emit("}")
        for _ in range(self.style.blank_lines):
            self.emit()
        self.open_brace("int main()")
        self.depth += 1
        entry = program.entry
        for args in program.inputs:
            call = ", ".join(self.literal(a, t) for a, (_, t) in zip(args, entry.params))
            self.emit(f"std::cout << {self.n(entry.name)}({call}) << \"\\n\";")
        self.emit("return 0;")
        self.depth -= 1
        self.emit("}")
        return self.finish()
