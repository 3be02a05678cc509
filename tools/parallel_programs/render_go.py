"""Go rendering: gofmt layout (tabs, no parentheses around conditions), slices, maps, fmt.Println."""

from __future__ import annotations

from tools.parallel_programs import ir
from tools.parallel_programs.render_base import PREC, Renderer

TYPES = {ir.T.INT: "int", ir.T.BOOL: "bool", ir.T.STR: "string", ir.T.CHAR: "byte", ir.T.INTS: "[]int",
         ir.T.LIST: "[]int", ir.T.MAP: "map[int]int"}


class GoRenderer(Renderer):
    lang = "go"
    ops = {"and": "&&", "or": "||"}

    # gofmt spacing: arithmetic binds tight (`n%2 == 0`, `3*n + 1`) below a looser operator of the same
    # expression, and always inside an index or an argument list of several arguments (`xs[j-1]`)
    compact = False
    floor = None

    def floor_of(self, e) -> int:
        if not isinstance(e, ir.Bin):
            return 99
        p = PREC[e.op]
        return min(p, *(self.floor_of(c) for c in (e.left, e.right) if self.prec(c) >= p))

    def expr(self, e) -> str:
        if isinstance(e, ir.Bin) and self.floor is None:
            self.floor = self.floor_of(e)
            try:
                return super().expr(e)
            finally:
                self.floor = None
        return super().expr(e)

    def wrap(self, e, need: int, strict: bool = False) -> str:
        p = self.prec(e)
        if p < need or (strict and p == need):
            saved, self.floor = self.floor, None
            try:
                return f"({self.expr(e)})"
            finally:
                self.floor = saved
        return self.expr(e)

    def tight(self, fn, *args):
        saved = self.compact, self.floor
        self.compact, self.floor = True, None
        try:
            return fn(*args)
        finally:
            self.compact, self.floor = saved

    def binary(self, e: ir.Bin) -> str:
        if e.op in ir.ARITH and (self.compact or (self.floor is not None and PREC[e.op] > self.floor)):
            p = PREC[e.op]
            left = self.wrap(e.left, p)
            right = self.wrap(e.right, p, strict=e.op in ("-", "/", "%"))
            return f"{left}{e.op}{right}"
        return super().binary(e)

    def e_index(self, e: ir.Index) -> str:
        return f"{self.wrap(e.seq, 9)}[{self.tight(self.expr, e.index)}]"

    def e_charat(self, e: ir.CharAt) -> str:
        return f"{self.wrap(e.text, 9)}[{self.tight(self.expr, e.index)}]"

    def args(self, args) -> str:
        render = (lambda a: self.tight(self.expr, a)) if len(args) > 1 else self.expr
        return ", ".join(render(a) for a in args)

    def e_call(self, e: ir.Call) -> str:
        return f"{self.n(e.fn)}({self.args(e.args)})"

    def e_len(self, e: ir.Len) -> str:
        return f"len({self.expr(e.seq)})"

    def e_concat(self, e: ir.Concat) -> str:
        return f"{self.concat_operand(e.left, e.left_char)} + {self.concat_operand(e.right, e.right_char)}"

    def concat_operand(self, e, is_char: bool) -> str:
        if isinstance(e, ir.Char):
            return f'"{e.value}"'
        return f"string({self.expr(e)})" if is_char else self.expr(e)

    def e_maphas(self, e: ir.MapHas) -> str:
        return f"contains({self.args((e.map, e.key))})"

    def e_mapget(self, e: ir.MapGet) -> str:
        # a missing key reads as the zero value: only a zero default renders as a plain index
        if e.default == ir.Int(0):
            return f"{self.wrap(e.map, 9)}[{self.tight(self.expr, e.key)}]"
        return f"getOr({self.expr(e.map)}, {self.expr(e.key)}, {self.expr(e.default)})"

    def e_last(self, e: ir.Last) -> str:
        seq = self.expr(e.seq)
        return f"{seq}[len({seq})-1]"

    def e_ord(self, e: ir.Ord) -> str:
        return f"int({self.expr(e.char)})"

    def e_inttostr(self, e: ir.IntToStr) -> str:
        return f"strconv.Itoa({self.expr(e.value)})"

    def s_setindex(self, st: ir.SetIndex) -> None:
        self.emit(f"{self.n(st.seq)}[{self.tight(self.expr, st.index)}] = {self.expr(st.value)}")

    def s_decl(self, st: ir.Decl) -> None:
        self.types[st.name] = st.type
        name = self.n(st.name)
        if st.value is None:
            self.emit(f"{name} := {TYPES[st.type]}{{}}")
        elif isinstance(st.value, ir.Int) and st.value.value == 0 and self.style.extra.get("const"):
            self.emit(f"var {name} {TYPES[st.type]}")
        else:
            self.emit(f"{name} := {self.expr(st.value)}")

    def s_assign(self, st: ir.Assign) -> None:
        self.emit(self.assign_text(self.n(st.name), st.name, st.value))

    def s_append(self, st: ir.Append) -> None:
        seq = self.n(st.seq)
        self.emit(f"{seq} = append({seq}, {self.tight(self.expr, st.value)})")

    def s_pop(self, st: ir.Pop) -> None:
        seq = self.n(st.seq)
        self.emit(f"{seq} = {seq}[:len({seq})-1]")

    def s_mapput(self, st: ir.MapPut) -> None:
        self.emit(f"{self.n(st.map)}[{self.tight(self.expr, st.key)}] = {self.expr(st.value)}")

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
        if "IntToStr(" in repr(program.functions):
            self.emit("import (")
            self.emit('\t"fmt"')
            self.emit('\t"strconv"')
            self.emit(")")
        else:
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
                first_word = note.split()[0]
                verb = first_word.isalpha() and first_word.endswith("s")
                self.emit(f"// {self.n(fn.name)} {note[0].lower()}{note[1:]}"
                          if verb and self.style.extra.get("docstring") else f"// {note}")
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
