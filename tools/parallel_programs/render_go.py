"""Go rendering: gofmt layout (tabs, no parentheses around conditions), slices, maps, fmt.Println."""

from __future__ import annotations

from tools.parallel_programs import ir
from tools.parallel_programs.render_base import Renderer

TYPES = {ir.T.INT: "int", ir.T.BOOL: "bool", ir.T.STR: "string", ir.T.CHAR: "byte", ir.T.INTS: "[]int",
         ir.T.LIST: "[]int", ir.T.MAP: "map[int]int"}


class GoRenderer(Renderer):
    lang = "go"
    ops = {"and": "&&", "or": "||"}

    def e_len(self, e: ir.Len) -> str:
        return f"len({self.expr(e.seq)})"

    def e_concat(self, e: ir.Concat) -> str:
        return f"{self.concat_operand(e.left, e.left_char)} + {self.concat_operand(e.right, e.right_char)}"

    def concat_operand(self, e, is_char: bool) -> str:
        if isinstance(e, ir.Char):
            return f'"{e.value}"'
        return f"string({self.expr(e)})" if is_char else self.expr(e)

    def e_maphas(self, e: ir.MapHas) -> str:
        return f"contains({self.expr(e.map)}, {self.expr(e.key)})"

    def e_mapget(self, e: ir.MapGet) -> str:
        # a missing key reads as the zero value: only a zero default renders as a plain index
        if e.default == ir.Int(0):
            return f"{self.wrap(e.map, 9)}[{self.expr(e.key)}]"
        return f"getOr({self.expr(e.map)}, {self.expr(e.key)}, {self.expr(e.default)})"

    def e_last(self, e: ir.Last) -> str:
        seq = self.expr(e.seq)
        return f"{seq}[len({seq})-1]"

    def s_decl(self, st: ir.Decl) -> None:
        self.types[st.name] = st.type
        name = self.n(st.name)
        if st.value is None:
            self.emit(f"{name} := {TYPES[st.type]}{{}}")
        elif isinstance(st.value, ir.Int) and st.value.value == 0 and self.style.extra.get("const"):
            self.emit(f"var {name} {TYPES[st.type]} = {self.expr(st.value)}")
        else:
            self.emit(f"{name} := {self.expr(st.value)}")

    def s_assign(self, st: ir.Assign) -> None:
        self.emit(self.assign_text(self.n(st.name), st.name, st.value))

    def s_append(self, st: ir.Append) -> None:
        seq = self.n(st.seq)
        self.emit(f"{seq} = append({seq}, {self.expr(st.value)})")

    def s_pop(self, st: ir.Pop) -> None:
        seq = self.n(st.seq)
        self.emit(f"{seq} = {seq}[:len({seq})-1]")

    def s_mapput(self, st: ir.MapPut) -> None:
        self.emit(f"{self.n(st.map)}[{self.expr(st.key)}] = {self.expr(st.value)}")

    def s_for(self, st: ir.For) -> None:
        i = self.n(st.var)
        if st.step == 1:
            head = f"for {i} := {self.expr(st.start)}; {i} < {self.expr(st.stop)}; {i}++ {{"
        else:
            top = self.expr(ir.Bin("-", st.stop, ir.Int(1)))
            head = f"for {i} := {top}; {i} >= {self.expr(st.start)}; {i}-- {{"
        self.emit(head)
        self.block(st.body)
        self.emit("}")

    def s_foreach(self, st: ir.ForEach) -> None:
        self.emit(f"for _, {self.n(st.var)} := range {self.n(st.seq)} {{")
        self.block(st.body)
        self.emit("}")

    def s_while(self, st: ir.While) -> None:
        self.emit(f"for {self.expr(st.cond)} {{")
        self.block(st.body)
        self.emit("}")

    def s_if(self, st: ir.If) -> None:
        self.emit(f"if {self.expr(st.cond)} {{")
        self.block(st.then)
        orelse = st.orelse
        while orelse:
            if len(orelse) == 1 and isinstance(orelse[0], ir.If):
                self.emit(f"}} else if {self.expr(orelse[0].cond)} {{")
                self.block(orelse[0].then)
                orelse = orelse[0].orelse
                continue
            self.emit("} else {")
            self.block(orelse)
            break
        self.emit("}")

    def s_return(self, st: ir.Return) -> None:
        self.emit(f"return {self.expr(st.value)}")

    def s_break(self, st: ir.Break) -> None:
        self.emit("break")

    def ints_literal(self, values: tuple[int, ...]) -> str:
        return "[]int{" + ", ".join(map(str, values)) + "}"

    def render(self, program: ir.Program) -> str:
        self.emit("package main")
        self.emit()
        self.emit('import "fmt"')
        if "default=Int(value=" in repr(program.functions).replace("default=Int(value=0)", ""):
            self.emit()
            self.emit("func getOr(m map[int]int, k, d int) int {")
            self.depth += 1
            self.emit("if v, ok := m[k]; ok {")
            self.emit("\treturn v")
            self.emit("}")
            self.emit("return d")
            self.depth -= 1
            self.emit("}")
        if "MapHas(" in repr(program.functions):
            self.emit()
            self.emit("func contains(m map[int]int, k int) bool {")
            self.emit("\t_, ok := m[k]")
            self.emit("\treturn ok")
            self.emit("}")
        for fn in program.functions:
            for _ in range(self.style.blank_lines):
                self.emit()
            self.types = {p: t for p, t in fn.params}
            note = self.comment(fn)
            if note:
                self.emit(f"// {self.n(fn.name)} {note[0].lower()}{note[1:]}" if self.style.extra.get("docstring")
                          else f"// {note}")
            params = ", ".join(f"{self.n(p)} {TYPES[t]}" for p, t in fn.params)
            self.emit(f"func {self.n(fn.name)}({params}) {TYPES[fn.returns]} {{")
            self.block(fn.body)
            self.emit("}")
        self.emit()
        self.emit("func main() {")
        self.depth += 1
        entry = program.entry
        for args in program.inputs:
            call = ", ".join(self.literal(a, t) for a, (_, t) in zip(args, entry.params))
            self.emit(f"fmt.Println({self.n(entry.name)}({call}))")
        self.depth -= 1
        self.emit("}")
        return self.finish()
