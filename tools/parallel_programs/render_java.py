"""Java rendering: one class with static methods, int[] inputs, ArrayList / HashMap locals."""

from __future__ import annotations

from tools.parallel_programs import ir
from tools.parallel_programs.render_base import CLike

TYPES = {ir.T.INT: "int", ir.T.BOOL: "boolean", ir.T.STR: "String", ir.T.CHAR: "char", ir.T.INTS: "int[]",
         ir.T.LIST: "List<Integer>", ir.T.MAP: "Map<Integer, Integer>"}
NEW = {ir.T.LIST: "new ArrayList<>()", ir.T.MAP: "new HashMap<>()"}
CLASSES = ("Main",)


class JavaRenderer(CLike):
    lang = "java"
    ops = {"and": "&&", "or": "||"}

    def is_list(self, e) -> bool:
        return isinstance(e, ir.Var) and self.types.get(e.name) == ir.T.LIST

    def e_index(self, e: ir.Index) -> str:
        if self.is_list(e.seq):
            return f"{self.expr(e.seq)}.get({self.expr(e.index)})"
        return super().e_index(e)

    def binary(self, e: ir.Bin) -> str:
        # two boxed Integers compare by reference: unbox the left one
        if e.op in ("==", "!=") and all(isinstance(x, (ir.Index, ir.Last)) for x in (e.left, e.right)):
            e = ir.Bin(e.op, ir.Bin("+", e.left, ir.Int(0)), e.right)
        return super().binary(e)

    def emptiness(self, seq, kind: ir.T, empty: bool) -> str | None:
        if kind == ir.T.INTS:
            return None
        return f"{'' if empty else '!'}{self.wrap(seq, 9)}.isEmpty()"

    def e_len(self, e: ir.Len) -> str:
        seq = self.wrap(e.seq, 9)
        return {ir.T.INTS: f"{seq}.length", ir.T.STR: f"{seq}.length()"}.get(e.kind, f"{seq}.size()")

    def e_charat(self, e: ir.CharAt) -> str:
        return f"{self.wrap(e.text, 9)}.charAt({self.expr(e.index)})"

    def e_concat(self, e: ir.Concat) -> str:
        left = self.expr(e.left)
        if e.left_char and e.right_char:
            left = f"String.valueOf({left})"
        return f"{left} + {self.expr(e.right)}"

    def e_mapget(self, e: ir.MapGet) -> str:
        return f"{self.wrap(e.map, 9)}.getOrDefault({self.expr(e.key)}, {self.expr(e.default)})"

    def e_maphas(self, e: ir.MapHas) -> str:
        return f"{self.wrap(e.map, 9)}.containsKey({self.expr(e.key)})"

    def e_last(self, e: ir.Last) -> str:
        seq = self.wrap(e.seq, 9)
        return f"{seq}.get({seq}.size() - 1)"

    def e_ord(self, e: ir.Ord) -> str:
        return f"(int) {self.wrap(e.char, 9)}"

    def e_inttostr(self, e: ir.IntToStr) -> str:
        return f"String.valueOf({self.expr(e.value)})"

    def s_setindex(self, st: ir.SetIndex) -> None:
        self.emit(f"{self.n(st.seq)}.set({self.expr(st.index)}, {self.expr(st.value)});")

    def s_decl(self, st: ir.Decl) -> None:
        self.types[st.name] = st.type
        value = NEW[st.type] if st.value is None else self.expr(st.value)
        self.emit(f"{TYPES[st.type]} {self.n(st.name)} = {value};")

    def s_append(self, st: ir.Append) -> None:
        self.emit(f"{self.n(st.seq)}.add({self.expr(st.value)});")

    def s_pop(self, st: ir.Pop) -> None:
        seq = self.n(st.seq)
        self.emit(f"{seq}.remove({seq}.size() - 1);")

    def s_mapput(self, st: ir.MapPut) -> None:
        self.emit(f"{self.n(st.map)}.put({self.expr(st.key)}, {self.expr(st.value)});")

    def s_foreach(self, st: ir.ForEach) -> None:
        self.open_brace(f"for (int {self.n(st.var)} : {self.n(st.seq)})")
        self.block(st.body)
        self.emit("}")

    def ints_literal(self, values: tuple[int, ...]) -> str:
        return "new int[]{" + ", ".join(map(str, values)) + "}"

    def render(self, program: ir.Program) -> str:
        text = repr(program.functions)
        imports = [name for name, used in (("java.util.ArrayList", "T.LIST"), ("java.util.HashMap", "T.MAP"),
                                           ("java.util.List", "T.LIST"), ("java.util.Map", "T.MAP"))
                   if used in text]
        for imp in imports:
            self.emit(f"import {imp};")
        if imports:
            self.emit()
        self.open_brace("public class Main")
        self.depth += 1
        first = True
        for fn in program.functions:
            if not first:
                for _ in range(self.style.blank_lines):
                    self.emit()
            first = False
            self.types = {p: t for p, t in fn.params}
            note = self.comment(fn)
            if note:
                self.emit(f"// {note}")
            params = ", ".join(f"{TYPES[t]} {self.n(p)}" for p, t in fn.params)
            self.open_brace(f"static {TYPES[fn.returns]} {self.n(fn.name)}({params})")
            self.block(fn.body)
            self.emit("}")
        self.emit()
        self.open_brace("public static void main(String[] args)")
        self.depth += 1
        entry = program.entry
        for args in program.inputs:
            call = ", ".join(self.literal(a, t) for a, (_, t) in zip(args, entry.params))
            self.emit(f"System.out.println({self.n(entry.name)}({call}));")
        self.depth -= 1
        self.emit("}")
        self.depth -= 1
        self.emit("}")
        return self.finish()
