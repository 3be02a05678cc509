"""A seeded generator of small programs in the intermediate form: algorithm templates with random parts.

Each template draws its constants, conditions, accumulations and helper calls, so templates compose
into thousands of distinct programs. Every template here was written for this project.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator

from tools.parallel_programs.ir import (
    Append, Assign, Bin, Break, Call, Char, CharAt, Concat, Decl, For, ForEach, Function, If, Index, Int, IntToStr,
    Last, Len, MapGet, MapHas, MapPut, Not, Ord, Pop, Program, Return, SetIndex, Str, T, Var, While,
)

P = 10007  # products are reduced modulo this prime, so every value fits a 32-bit int
V = Var


def b(op: str, left, right) -> Bin:
    return Bin(op, left, right)


ONE = Int(1)


def inc(name: str, by=ONE) -> Assign:
    return Assign(name, b("+", V(name), by))


def dec(name: str) -> Assign:
    return Assign(name, b("-", V(name), ONE))


def size(name: str, kind: T) -> Len:
    return Len(V(name), kind)


# ---- parts: conditions on an int, values mapped from an int, English for both --------------------


def int_condition(rng: random.Random, x) -> tuple[object, str]:
    """A predicate on a non-negative int and its description."""
    kind = rng.choice(("mod", "mod", "gt", "lt", "ne_mod", "range", "both", "either"))
    if kind == "mod":
        k = rng.randint(2, 7)
        r = rng.randrange(k)
        return b("==", b("%", x, Int(k)), Int(r)), ("even" if (k, r) == (2, 0) else "odd" if (k, r) == (2, 1)
                                                     else f"congruent to {r} mod {k}")
    if kind == "ne_mod":
        k = rng.randint(2, 9)
        return b("!=", b("%", x, Int(k)), Int(0)), f"not divisible by {k}"
    if kind == "gt":
        c = rng.randint(0, 60)
        return b(rng.choice((">", ">=")), x, Int(c)), f"above {c}"
    if kind == "lt":
        c = rng.randint(5, 90)
        return b(rng.choice(("<", "<=")), x, Int(c)), f"below {c}"
    if kind == "range":
        lo = rng.randint(0, 40)
        hi = lo + rng.randint(5, 50)
        return b("and", b(">=", x, Int(lo)), b("<=", x, Int(hi))), f"between {lo} and {hi}"
    left, d1 = int_condition(rng, x) if rng.random() < 0.3 else (
        b("==", b("%", x, Int(2)), Int(rng.randrange(2))), None)
    if d1 is None:
        d1 = "even" if left.right == Int(0) else "odd"
    c = rng.randint(3, 70)
    right = b(">", x, Int(c)) if rng.random() < 0.5 else b("<", x, Int(c))
    d2 = ("above " if right.op == ">" else "below ") + str(c)
    op = "and" if kind == "both" else "or"
    if isinstance(left, Bin) and left.op in ("and", "or") and left.op != op:
        left = left.left
    return b(op, left, right), f"{d1} {op} {d2}"


def helper_function(rng: random.Random) -> tuple[Function, str]:
    """A helper int -> int the entry may call on each element."""
    which = rng.choice(("digits", "digits", "gcd", "collatz", "square_mod"))
    if which == "digits":
        base = rng.choice((10, 10, 10, 2, 8, 3))
        part = rng.choice(("sum", "count", "max"))
        step = {"sum": inc("acc", b("%", V("n"), Int(base))), "count": inc("acc"),
                "max": If(b(">", b("%", V("n"), Int(base)), V("acc")), (Assign("acc", b("%", V("n"), Int(base))),))}
        body = (Decl("acc", T.INT, Int(0)),
                While(b(">", V("n"), Int(0)), (step[part], Assign("n", b("/", V("n"), Int(base))))),
                Return(V("acc")))
        words = {"sum": "sum of", "count": "number of", "max": "largest of"}[part]
        desc = f"the {words} the base-{base} digits"
        names = {"sum": (("digit", "sum"), ("sum", "digits"), ("digits", "total")),
                 "count": (("digit", "count"), ("num", "digits"), ("count", "digits")),
                 "max": (("max", "digit"), ("top", "digit"), ("largest", "digit"))}[part]
        fn = Function("helper", (("n", T.INT),), T.INT, body, (f"Returns {desc} of n.", f"Computes {desc}."))
        return fn, names
    if which == "gcd":
        k = rng.randint(6, 60)
        body = (Decl("a", T.INT, V("n")), Decl("b", T.INT, Int(k)),
                While(b("!=", V("b"), Int(0)), (Decl("t", T.INT, b("%", V("a"), V("b"))), Assign("a", V("b")),
                                                  Assign("b", V("t")))),
                Return(V("a")))
        return (Function("helper", (("n", T.INT),), T.INT, body,
                         (f"Returns the greatest common divisor of n and {k}.", f"Euclid's algorithm against {k}.")),
                (("gcd", "with"), ("common", "divisor"), ("euclid",)))
    if which == "collatz":
        limit = rng.randint(10, 60)
        body = (Decl("steps", T.INT, Int(0)),
                While(b("and", b(">", V("n"), Int(1)), b("<", V("steps"), Int(limit))),
                      (If(b("==", b("%", V("n"), Int(2)), Int(0)), (Assign("n", b("/", V("n"), Int(2))),),
                          (Assign("n", b("+", b("*", Int(3), V("n")), Int(1))),)), inc("steps"))),
                Return(V("steps")))
        return (Function("helper", (("n", T.INT),), T.INT, body,
                         (f"Counts Collatz steps from n, stopping after {limit}.",
                          f"Returns how many halve-or-triple steps bring n to 1 (at most {limit}).")),
                (("collatz", "steps"), ("hailstone", "len"), ("steps", "to", "one")))
    k = rng.randint(2, 9)
    c = rng.randint(0, 20)
    body = (Return(b("%", b("+", b("*", V("n"), V("n")), b("*", Int(k), V("n"))), Int(P if c else 97))),)
    return (Function("helper", (("n", T.INT),), T.INT, body, (f"Returns n*n + {k}*n reduced modulo a prime.",)),
            (("poly", "mod"), ("square", "plus"), ("mix",)))


def mapped(rng: random.Random, x) -> tuple[object, str, Function | None, object]:
    """A value computed from element ``x``: (expression, description, helper or None, helper names)."""
    kind = rng.choice(("id", "id", "square", "scale", "shift", "mod", "helper", "helper"))
    if kind == "id":
        return x, "the values", None, None
    if kind == "square":
        return b("*", x, x), "the squares", None, None
    if kind == "scale":
        k = rng.randint(2, 9)
        return b("*", Int(k), x), f"{k} times the values", None, None
    if kind == "shift":
        k = rng.randint(1, 20)
        return b("+", x, Int(k)), f"the values plus {k}", None, None
    if kind == "mod":
        k = rng.randint(3, 11)
        return b("%", x, Int(k)), f"the values mod {k}", None, None
    fn, names = helper_function(rng)
    return Call("helper", (x,)), f"the {names[0][0]} values", fn, names


# ---- inputs --------------------------------------------------------------------------------------


def int_array(rng: random.Random, top: int = 99) -> tuple[int, ...]:
    return tuple(rng.randint(0, top) for _ in range(rng.randint(0, 8)))


def text(rng: random.Random, alphabet: str) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))


def loop_over(rng: random.Random, body_of: Callable[[object], tuple]) -> object:
    """Iterate ``xs`` by value or by index (the element expression is handed to ``body_of``)."""
    if rng.random() < 0.5:
        return ForEach("x", "xs", body_of(V("x")))
    return For("i", Int(0), Len(V("xs"), T.INTS), body_of(Index(V("xs"), V("i"))))


def program(kind: str, entry: Function, helper: Function | None, helper_names, inputs, names) -> Program:
    fns = (helper, entry) if helper else (entry,)
    roles = {"entry": names}
    if helper:
        roles["helper"] = helper_names
    return Program(kind, tuple(fns), tuple(inputs), roles)


# ---- templates -----------------------------------------------------------------------------------


def t_reduce(rng: random.Random) -> Program:
    """Sum, count, product, max or min of mapped elements that pass a condition."""
    acc_kind = rng.choice(("sum", "sum", "count", "product", "max", "min"))
    use_cond = rng.random() < 0.75
    cond_desc, value_desc = "", "the values"
    helper = helper_names = None
    cond, cond_desc = int_condition(rng, V("x"))
    value, value_desc, helper, helper_names = mapped(rng, V("x"))
    if acc_kind == "count":
        value, value_desc, helper, helper_names = V("x"), "the values", None, None
        use_cond = True
    init = {"sum": Int(0), "count": Int(0), "product": Int(1), "max": Int(-1), "min": Int(1000000)}[acc_kind]

    def body(x):
        c = _subst(cond, x)
        v = _subst(value, x)
        if acc_kind in ("max", "min"):
            update = (Decl("t", T.INT, v),
                      If(b(">" if acc_kind == "max" else "<", V("t"), V("acc")), (Assign("acc", V("t")),)))
        else:
            update = ({"sum": inc("acc", v), "count": inc("acc"),
                       "product": Assign("acc", b("%", b("*", V("acc"), b("%", v, Int(P))), Int(P)))}[acc_kind],)
        return (If(c, update),) if use_cond else update

    stmts = [Decl("acc", T.INT, init), loop_over(rng, body)]
    final = V("acc")
    if rng.random() < 0.25 and acc_kind in ("sum", "count"):
        k = rng.randint(2, 13)
        final = b("%", V("acc"), Int(k))
    stmts.append(Return(final))
    what = {"sum": "Sums", "count": "Counts", "product": "Multiplies", "max": "Finds the largest of",
            "min": "Finds the smallest of"}[acc_kind]
    where = f" that are {cond_desc}" if use_cond else ""
    obj = "the values" if acc_kind == "count" else value_desc
    comments = (f"{what} {obj}{where}.", f"{what} {obj} in the array{where}.")
    names = {"sum": (("sum", "selected"), ("total", "of"), ("accumulate",), ("sum", "where")),
             "count": (("count", "matching"), ("count", "if"), ("num", "matching"), ("tally",)),
             "product": (("product", "mod"), ("mul", "all"), ("product", "of")),
             "max": (("max", "value"), ("largest",), ("find", "max"), ("peak",)),
             "min": (("min", "value"), ("smallest",), ("find", "min"), ("lowest",))}[acc_kind]
    entry = Function("entry", (("xs", T.INTS),), T.INT, tuple(stmts), comments)
    inputs = [(int_array(rng),) for _ in range(rng.randint(2, 3))]
    return program(f"reduce_{acc_kind}", entry, helper, helper_names, inputs, names)


def _subst(e, x):
    """Replace Var('x') by ``x`` throughout an expression."""
    if e == Var("x"):
        return x
    if isinstance(e, Bin):
        return Bin(e.op, _subst(e.left, x), _subst(e.right, x))
    if isinstance(e, Not):
        return Not(_subst(e.operand, x))
    if isinstance(e, Call):
        return Call(e.fn, tuple(_subst(a, x) for a in e.args))
    return e


def t_argbest(rng: random.Random) -> Program:
    """Index of the first or last largest or smallest element (-1 when empty)."""
    big = rng.random() < 0.5
    last = rng.random() < 0.5
    op = (">=" if last else ">") if big else ("<=" if last else "<")
    value, value_desc, helper, helper_names = mapped(rng, Index(V("xs"), V("i")))
    body = (Decl("t", T.INT, value),
            If(b("or", b("==", V("best_i"), Int(-1)), b(op, V("t"), V("best"))),
               (Assign("best", V("t")), Assign("best_i", V("i")))))
    stmts = (Decl("best", T.INT, Int(0)), Decl("best_i", T.INT, Int(-1)),
             For("i", Int(0), Len(V("xs"), T.INTS), body), Return(V("best_i")))
    which = ("last" if last else "first") + (" largest" if big else " smallest")
    entry = Function("entry", (("xs", T.INTS),), T.INT, stmts,
                     (f"Returns the index of the {which} of {value_desc}, or -1.",
                      f"Finds where the {which} entry sits."))
    names = (("arg", "max"), ("index", "of", "max"), ("best", "index")) if big else (
        ("arg", "min"), ("index", "of", "min"), ("lowest", "index"))
    return program("argbest", entry, helper, helper_names, [(int_array(rng),) for _ in range(3)], names)


def t_number(rng: random.Random) -> Program:
    """Digit loops, Euclid and Collatz on one int, optionally summed over a range."""
    fn, names = helper_function(rng)
    if rng.random() < 0.5:
        entry = Function("entry", fn.params, T.INT, fn.body, fn.comments)
        inputs = [(rng.randint(0, 5000),) for _ in range(3)]
        return program("number", entry, None, None, inputs, names)
    cond, cond_desc = int_condition(rng, V("i"))
    stmts = (Decl("acc", T.INT, Int(0)),
             For("i", Int(rng.randint(0, 3)), V("m"), (If(cond, (inc("acc", Call("helper", (V("i"),))),)),)),
             Return(V("acc")))
    entry = Function("entry", (("m", T.INT),), T.INT, stmts,
                     (f"Adds the helper's value over i below m where i is {cond_desc}.",))
    inputs = [(rng.randint(0, 60),) for _ in range(3)]
    return program("number_range", entry, fn, names,
                   inputs, (("sum", "over", "range"), ("range", "total"), ("accumulate", "upto")))


LETTERS = "abcdexyz"


def char_condition(rng: random.Random, c) -> tuple[object, str]:
    kind = rng.choice(("eq", "ne", "range", "vowelish"))
    if kind == "eq":
        ch = rng.choice(LETTERS)
        return b("==", c, Char(ch)), f"equal to '{ch}'"
    if kind == "ne":
        ch = rng.choice(LETTERS)
        return b("!=", c, Char(ch)), f"not '{ch}'"
    if kind == "range":
        lo = rng.choice("abcd")
        hi = rng.choice("exyz")
        return b("and", b(">=", c, Char(lo)), b("<=", c, Char(hi))), f"between '{lo}' and '{hi}'"
    a, e = rng.sample("abcde", 2)
    return b("or", b("==", c, Char(a)), b("==", c, Char(e))), f"'{a}' or '{e}'"


def t_string(rng: random.Random) -> Program:
    """Count, filter, replace, reverse or double characters of a string."""
    op = rng.choice(("count", "filter", "replace", "reverse", "double", "palindrome"))
    cond, cond_desc = char_condition(rng, V("c"))
    s_len = Len(V("s"), T.STR)
    inputs = [(text(rng, LETTERS),) for _ in range(3)]
    if op == "palindrome":
        on_array = rng.random() < 0.4
        seq, kind = ("xs", T.INTS) if on_array else ("s", T.STR)
        at = (lambda k: Index(V("xs"), V(k))) if on_array else (lambda k: CharAt(V("s"), V(k)))
        count_mismatches = rng.random() < 0.4
        if count_mismatches:
            check = If(b("!=", at("lo"), at("hi")), (inc("count"),))
            stmts = (Decl("lo", T.INT, Int(0)), Decl("hi", T.INT, b("-", size(seq, kind), ONE)),
                     Decl("count", T.INT, Int(0)), While(b("<", V("lo"), V("hi")), (check, inc("lo"), dec("hi"))),
                     Return(V("count")))
            comments = ("Counts mirrored positions that differ (edits to a palindrome).",)
        else:
            stmts = (Decl("lo", T.INT, Int(0)), Decl("hi", T.INT, b("-", size(seq, kind), ONE)),
                     While(b("<", V("lo"), V("hi")),
                           (If(b("!=", at("lo"), at("hi")), (Return(Int(0)),)), inc("lo"), dec("hi"))),
                     Return(ONE))
            comments = ("Returns 1 when the input reads the same backwards, else 0.", "Two-pointer palindrome check.")
        if on_array:
            half = int_array(rng)
            inputs = [(half + half[::-1],), (int_array(rng),), (half + (rng.randint(0, 99),) + half[::-1],)]
        else:
            half = "".join(rng.choice(LETTERS) for _ in range(rng.randint(1, 4)))
            inputs[0] = (half + half[::-1],)
        entry = Function("entry", ((seq, kind),), T.INT, stmts, comments)
        return program("palindrome", entry, None, None, inputs,
                       (("is", "palindrome"), ("palindrome",), ("mirrored",), ("mismatches",)))
    if op == "count":
        body = (Decl("c", T.CHAR, CharAt(V("s"), V("i"))), If(cond, (inc("count"),)))
        stmts = (Decl("count", T.INT, Int(0)), For("i", Int(0), s_len, body), Return(V("count")))
        entry = Function("entry", (("s", T.STR),), T.INT, stmts, (f"Counts characters {cond_desc}.",))
        return program("count_chars", entry, None, None, inputs,
                       (("count", "chars"), ("count", "letters"), ("char", "hits")))
    if op == "reverse":
        backwards = rng.random() < 0.5
        only = rng.random() < 0.5
        if backwards:
            grow = (Assign("out", Concat(V("out"), V("c"), right_char=True)),)
        else:
            grow = (Assign("out", Concat(V("c"), V("out"), left_char=True)),)
        body = (Decl("c", T.CHAR, CharAt(V("s"), V("i"))), If(cond, grow) if only else grow[0])
        loop = For("i", Int(0), s_len, body, step=-1 if backwards else 1)
        stmts = (Decl("out", T.STR, Str("")), loop, Return(V("out")))
        where = f", keeping only characters {cond_desc}" if only else ""
        entry = Function("entry", (("s", T.STR),), T.STR, stmts, (f"Returns s reversed{where}.",
                                                                  f"Builds s backwards{where}."))
        return program("reverse", entry, None, None, inputs, (("reversed",), ("reverse", "text"), ("backwards",)))
    if op == "filter":
        keep = rng.random() < 0.5
        test = cond if keep else Not(cond)
        body = (Decl("c", T.CHAR, CharAt(V("s"), V("i"))),
                If(test, (Assign("out", Concat(V("out"), V("c"), right_char=True)),)))
        verb = "Keeps" if keep else "Drops"
        stmts = (Decl("out", T.STR, Str("")), For("i", Int(0), s_len, body), Return(V("out")))
        entry = Function("entry", (("s", T.STR),), T.STR, stmts, (f"{verb} the characters {cond_desc}.",))
        return program("filter_chars", entry, None, None, inputs,
                       (("filter", "chars"), ("keep", "some"), ("strip", "chars"), ("select", "letters")))
    if op == "replace":
        new = rng.choice("*#-_.")
        body = (Decl("c", T.CHAR, CharAt(V("s"), V("i"))),
                If(cond, (Assign("out", Concat(V("out"), Char(new), right_char=True)),),
                   (Assign("out", Concat(V("out"), V("c"), right_char=True)),)))
        stmts = (Decl("out", T.STR, Str("")), For("i", Int(0), s_len, body), Return(V("out")))
        entry = Function("entry", (("s", T.STR),), T.STR, stmts, (f"Masks characters {cond_desc} with '{new}'.",))
        return program("replace_chars", entry, None, None, inputs, (("mask",), ("replace", "chars"), ("censor",)))
    sep = rng.choice("-+:")
    body = (Decl("c", T.CHAR, CharAt(V("s"), V("i"))),
            If(cond, (Assign("out", Concat(Concat(V("out"), V("c"), right_char=True), V("c"), right_char=True)),),
               (Assign("out", Concat(V("out"), Char(sep), right_char=True)),)))
    stmts = (Decl("out", T.STR, Str("")), For("i", Int(0), s_len, body), Return(V("out")))
    entry = Function("entry", (("s", T.STR),), T.STR, stmts,
                     (f"Doubles characters {cond_desc} and turns the rest into '{sep}'.",))
    return program("double_chars", entry, None, None, inputs, (("stutter",), ("double", "some"), ("echo", "chars")))


def t_prefix(rng: random.Random) -> Program:
    """Prefix sums into a list, then a query over them."""
    cond, cond_desc = int_condition(rng, Index(V("prefix"), V("i")))
    k = rng.randint(2, 9)
    query = rng.choice(("count", "max_window"))
    stmts = [Decl("prefix", T.LIST, None), Append("prefix", Int(0)),
             ForEach("x", "xs", (Append("prefix", b("+", Last(V("prefix")), V("x"))),))]
    if query == "count":
        stmts += [Decl("count", T.INT, Int(0)),
                  For("i", Int(1), Len(V("prefix"), T.LIST), (If(cond, (inc("count"),)),)), Return(V("count"))]
        comment = f"Counts prefix sums that are {cond_desc}."
    else:
        stmts += [Decl("best", T.INT, Int(0)),
                  For("i", Int(k), Len(V("prefix"), T.LIST),
                      (Decl("t", T.INT, b("-", Index(V("prefix"), V("i")), Index(V("prefix"), b("-", V("i"), Int(k))))),
                       If(b(">", V("t"), V("best")), (Assign("best", V("t")),)))),
                  Return(V("best"))]
        comment = f"Largest sum of {k} consecutive values, from prefix sums."
    entry = Function("entry", (("xs", T.INTS),), T.INT, tuple(stmts), (comment,))
    inputs = [(int_array(rng),) for _ in range(3)]
    return program(f"prefix_{query}", entry, None, None, inputs,
                   (("prefix", "query"), ("scan", "sums"), ("window", "best"), ("running", "sums")))


def t_pairs(rng: random.Random) -> Program:
    """Pairs i < j whose sum or difference meets a condition (nested loops), or two-pointer on sorted input."""
    if rng.random() < 0.5:
        target = rng.randint(10, 120)
        stmts = (Decl("lo", T.INT, Int(0)), Decl("hi", T.INT, b("-", Len(V("xs"), T.INTS), Int(1))),
                 Decl("count", T.INT, Int(0)),
                 While(b("<", V("lo"), V("hi")),
                       (Decl("t", T.INT, b("+", Index(V("xs"), V("lo")), Index(V("xs"), V("hi")))),
                        If(b("==", V("t"), Int(target)), (inc("count"), inc("lo"), dec("hi")),
                           (If(b("<", V("t"), Int(target)), (inc("lo"),), (dec("hi"),)),)))),
                 Return(V("count")))
        inputs = [(tuple(sorted(int_array(rng, 70))),) for _ in range(3)]
        entry = Function("entry", (("xs", T.INTS),), T.INT, stmts,
                         (f"Two pointers over sorted xs: counts disjoint pairs summing to {target}.",))
        return program("two_pointer", entry, None, None, inputs,
                       (("pairs", "to", "target"), ("two", "sum", "count"), ("match", "pairs")))
    cond, cond_desc = int_condition(rng, V("t"))
    op = rng.choice(("+", "*", "-"))
    pair = b(op, Index(V("xs"), V("i")), Index(V("xs"), V("j")))
    if op == "*":
        pair = b("%", pair, Int(P))
    inner = For("j", b("+", V("i"), Int(1)), Len(V("xs"), T.INTS), (Decl("t", T.INT, pair), If(cond, (inc("count"),))))
    if op == "-":
        inner = For("j", b("+", V("i"), Int(1)), Len(V("xs"), T.INTS),
                    (Decl("t", T.INT, pair), If(b("<", V("t"), Int(0)), (Assign("t", b("-", Int(0), V("t"))),)),
                     If(cond, (inc("count"),))))
    stmts = (Decl("count", T.INT, Int(0)), For("i", Int(0), Len(V("xs"), T.INTS), (inner,)), Return(V("count")))
    what = {"+": "sum", "*": "product", "-": "distance"}[op]
    entry = Function("entry", (("xs", T.INTS),), T.INT, stmts, (f"Counts pairs whose {what} is {cond_desc}.",))
    return program("pairs", entry, None, None, [(int_array(rng),) for _ in range(3)],
                   (("count", "pairs"), ("pair", "count"), ("pairs", "where")))


def t_stack(rng: random.Random) -> Program:
    """Bracket depth with a stack, or a monotonic stack over ints."""
    if rng.random() < 0.5:
        open_, close = rng.choice((("(", ")"), ("[", "]"), ("{", "}"), ("<", ">")))
        what = rng.choice(("depth", "balanced"))
        stmts = [Decl("stack", T.LIST, None), Decl("depth", T.INT, Int(0)),
                 For("i", Int(0), Len(V("s"), T.STR),
                     (Decl("c", T.CHAR, CharAt(V("s"), V("i"))),
                      If(b("==", V("c"), Char(open_)),
                         (Append("stack", V("i")),
                          If(b(">", size("stack", T.LIST), V("depth")), (Assign("depth", size("stack", T.LIST)),))),
                         (If(b("==", V("c"), Char(close)),
                             (If(b("==", size("stack", T.LIST), Int(0)), (Return(Int(-1)),)), Pop("stack"))),)))),
                 ]
        if what == "depth":
            stmts.append(Return(V("depth")))
            comment = f"Deepest nesting of '{open_}{close}' pairs, or -1 when one closes too early."
        else:
            stmts.append(If(b("==", size("stack", T.LIST), Int(0)), (Return(Int(1)),)))
            stmts.append(Return(Int(0)))
            comment = f"Returns 1 when the '{open_}{close}' brackets balance, 0 or -1 otherwise."
        alphabet = open_ * 3 + close * 3 + "ab"
        entry = Function("entry", (("s", T.STR),), T.INT, tuple(stmts), (comment,))
        return program(f"brackets_{what}", entry, None, None, [(text(rng, alphabet),) for _ in range(3)],
                       (("bracket", what), ("nesting", what), ("check", "brackets")))
    op = rng.choice((">", ">=", "<", "<="))
    result = rng.choice(("size", "sum", "top"))
    value, value_desc, helper, helper_names = mapped(rng, V("x"))
    stmts = [Decl("stack", T.LIST, None),
             ForEach("x", "xs", (Decl("t", T.INT, value),
                                 While(b("and", b(">", size("stack", T.LIST), Int(0)), b(op, Last(V("stack")), V("t"))),
                                       (Pop("stack"),)), Append("stack", V("t"))))]
    if result == "size":
        stmts.append(Return(size("stack", T.LIST)))
    elif result == "sum":
        stmts += [Decl("acc", T.INT, Int(0)),
                  For("i", Int(0), size("stack", T.LIST), (inc("acc", Index(V("stack"), V("i"))),)),
                  Return(V("acc"))]
    else:
        stmts.append(If(b("==", size("stack", T.LIST), Int(0)), (Return(Int(-1)),)))
        stmts.append(Return(Last(V("stack"))))
    entry = Function("entry", (("xs", T.INTS),), T.INT, tuple(stmts),
                     (f"Monotonic stack over {value_desc}: pops while the top is {op} the new one; "
                      f"returns its {result}.",))
    return program(f"mono_stack_{result}", entry, helper, helper_names, [(int_array(rng),) for _ in range(3)],
                   (("monotonic", result), ("stack", result), ("staircase",)))


def t_map(rng: random.Random) -> Program:
    """Frequency maps: distinct keys, the highest count, or pairs that complete a target."""
    k = rng.randint(3, 12)
    key = b("%", V("x"), Int(k)) if rng.random() < 0.5 else V("x")
    what = rng.choice(("distinct", "top", "complement"))
    stmts = [Decl("seen", T.MAP, None)]
    if what == "complement":
        target = rng.randint(20, 120)
        need = b("-", Int(target), V("x"))
        stmts += [Decl("count", T.INT, Int(0)),
                  ForEach("x", "xs", (If(b("and", b("<=", V("x"), Int(target)), MapHas(V("seen"), need)),
                                         (inc("count", MapGet(V("seen"), need, Int(0))),)),
                                      MapPut("seen", V("x"), b("+", MapGet(V("seen"), V("x"), Int(0)), ONE)))),
                  Return(V("count"))]
        comment = f"Counts pairs summing to {target} with a frequency map."
    else:
        stmts.append(ForEach("x", "xs", (Decl("key", T.INT, key),
                                         MapPut("seen", V("key"), b("+", MapGet(V("seen"), V("key"), Int(0)), ONE)))))
        if what == "distinct":
            stmts.append(Return(Len(V("seen"), T.MAP)))
            comment = "Counts distinct keys." if key == V("x") else f"Counts distinct residues mod {k}."
        else:
            stmts += [Decl("best", T.INT, Int(0)),
                      ForEach("x", "xs", (If(b(">", MapGet(V("seen"), key, Int(0)), V("best")),
                                             (Assign("best", MapGet(V("seen"), key, Int(0))),)),)),
                      Return(V("best"))]
            comment = "Returns the count of the most frequent key."
    entry = Function("entry", (("xs", T.INTS),), T.INT, tuple(stmts), (comment,))
    inputs = [(int_array(rng, rng.choice((9, 30, 99))),) for _ in range(3)]
    return program(f"map_{what}", entry, None, None, inputs, (("freq", what), ("tally", what), ("histogram", what)))


def t_runs(rng: random.Random) -> Program:
    """Longest run of consecutive elements meeting a condition (or increasing)."""
    if rng.random() < 0.4:
        cond = b("<", Index(V("xs"), b("-", V("i"), Int(1))), Index(V("xs"), V("i")))
        desc = "strictly increasing"
        start = Int(1)
    else:
        cond, desc = int_condition(rng, Index(V("xs"), V("i")))
        start = Int(0)
    reset = Int(1) if start == Int(1) else Int(0)
    stmts = (Decl("run", T.INT, reset), Decl("best", T.INT, Int(0)),
             For("i", start, Len(V("xs"), T.INTS),
                 (If(cond, (inc("run"),), (Assign("run", reset),)),
                  If(b(">", V("run"), V("best")), (Assign("best", V("run")),)))),
             Return(V("best")))
    if start == Int(1):
        stmts = (If(b("==", Len(V("xs"), T.INTS), Int(0)), (Return(Int(0)),)),) + stmts
    entry = Function("entry", (("xs", T.INTS),), T.INT, stmts, (f"Length of the longest {desc} run.",
                                                                 f"Longest stretch of values that is {desc}."))
    return program("longest_run", entry, None, None, [(int_array(rng),) for _ in range(3)],
                   (("longest", "run"), ("max", "streak"), ("best", "stretch")))


def t_sort(rng: random.Random) -> Program:
    """Insertion sort of a copy, then a read-out: the k-th smallest, the median or a weighted checksum."""
    descending = rng.random() < 0.3
    out_kind = rng.choice(("kth", "median", "checksum"))
    swap = (Decl("t", T.INT, Index(V("ys"), V("j"))),
            SetIndex("ys", V("j"), Index(V("ys"), b("-", V("j"), ONE))),
            SetIndex("ys", b("-", V("j"), ONE), V("t")), dec("j"))
    order = b("<" if descending else ">", Index(V("ys"), b("-", V("j"), ONE)), Index(V("ys"), V("j")))
    value, value_desc, helper, helper_names = mapped(rng, V("x"))
    stmts = [Decl("ys", T.LIST, None), ForEach("x", "xs", (Append("ys", value),)),
             For("i", ONE, size("ys", T.LIST), (Decl("j", T.INT, V("i")), While(b("and", b(">", V("j"), Int(0)), order),
                                                                               swap)))]
    way = "descending" if descending else "ascending"
    if out_kind == "kth":
        k = rng.randint(0, 4)
        stmts += [If(b("<=", size("ys", T.LIST), Int(k)), (Return(Int(-1)),)), Return(Index(V("ys"), Int(k)))]
        comment = f"Sorts a copy ({way}) and returns the entry at position {k}, or -1."
    elif out_kind == "median":
        stmts += [If(b("==", size("ys", T.LIST), Int(0)), (Return(Int(-1)),)),
                  Return(Index(V("ys"), b("/", size("ys", T.LIST), Int(2))))]
        comment = f"Middle element after an insertion sort ({way})."
    else:
        weighted = b("*", b("+", V("i"), ONE), Index(V("ys"), V("i")))
        stmts += [Decl("acc", T.INT, Int(0)),
                  For("i", Int(0), size("ys", T.LIST),
                      (Assign("acc", b("%", b("+", V("acc"), weighted), Int(P))),)),
                  Return(V("acc"))]
        comment = f"Position-weighted checksum of the values sorted {way}."
    entry = Function("entry", (("xs", T.INTS),), T.INT, tuple(stmts),
                     (comment, f"Insertion sort of {value_desc}, {way}."))
    return program(f"sort_{out_kind}", entry, helper, helper_names, [(int_array(rng),) for _ in range(3)],
                   (("sorted", out_kind), ("insertion", "sort"), ("order", "then", "pick")))


def t_search(rng: random.Random) -> Program:
    """Binary search for the first position not below (or above) a target in sorted input."""
    strict = rng.random() < 0.5
    shift = rng.choice((0, 0, rng.randint(1, 9)))
    probe = Index(V("xs"), V("mid"))
    test = b("<=" if strict else "<", b("+", probe, Int(shift)) if shift else probe, V("target"))
    above = rng.random() < 0.4
    stmts = (Decl("lo", T.INT, Int(0)), Decl("hi", T.INT, size("xs", T.INTS)),
             While(b("<", V("lo"), V("hi")),
                   (Decl("mid", T.INT, b("/", b("+", V("lo"), V("hi")), Int(2))),
                    If(test, (Assign("lo", b("+", V("mid"), ONE)),), (Assign("hi", V("mid")),)))),
             Return(b("-", size("xs", T.INTS), V("lo")) if above else V("lo")))
    bound = "upper" if strict else "lower"
    what = f"x + {shift}" if shift else "x"
    relation = ("above" if strict else "at least") if above else ("at most" if strict else "below")
    entry = Function("entry", (("xs", T.INTS), ("target", T.INT)), T.INT, stmts,
                     (f"Binary search: counts values x of sorted xs with {what} {relation} target.",
                      f"Returns how many sorted values have {what} {relation} target."))
    inputs = []
    for _ in range(3):
        xs = tuple(sorted(int_array(rng, 50)))
        inputs.append((xs, rng.choice(xs) if xs and rng.random() < 0.6 else rng.randint(0, 55)))
    return program(f"search_{bound}", entry, None, None, inputs,
                   ((bound, "bound"), ("bisect", bound), ("search", "sorted")))


def t_text_numbers(rng: random.Random) -> Program:
    """A polynomial hash of a string's codes, or the selected values joined into text."""
    if rng.random() < 0.5:
        base = rng.choice((31, 37, 131, 257))
        cond, cond_desc = char_condition(rng, CharAt(V("s"), V("i")))
        use_cond = rng.random() < 0.4
        step = Assign("acc", b("%", b("+", b("*", V("acc"), Int(base)), Ord(CharAt(V("s"), V("i")))), Int(P)))
        stmts = (Decl("acc", T.INT, Int(rng.choice((0, 7, 17)))),
                 For("i", Int(0), size("s", T.STR), (If(cond, (step,)),) if use_cond else (step,)),
                 Return(V("acc")))
        where = f" over characters {cond_desc}" if use_cond else ""
        entry = Function("entry", (("s", T.STR),), T.INT, stmts,
                         (f"Polynomial hash with base {base} modulo {P}{where}.", f"Rolling hash of s{where}."))
        return program("string_hash", entry, None, None, [(text(rng, LETTERS),) for _ in range(3)],
                       (("hash", "text"), ("rolling", "hash"), ("fingerprint",)))
    cond, cond_desc = int_condition(rng, V("x"))
    sep = rng.choice((",", ", ", "-", " ", "|", ";"))
    joined = Concat(V("out"), Str(sep))
    stmts = (Decl("out", T.STR, Str("")),
             ForEach("x", "xs", (If(cond, (If(b(">", size("out", T.STR), Int(0)), (Assign("out", joined),)),
                                           Assign("out", Concat(V("out"), IntToStr(V("x")))))),)),
             Return(V("out")))
    entry = Function("entry", (("xs", T.INTS),), T.STR, stmts,
                     (f"Joins the values {cond_desc} with '{sep}'.", f"Lists the {cond_desc} values as text."))
    return program("join_values", entry, None, None, [(int_array(rng),) for _ in range(3)],
                   (("join", "selected"), ("format", "values"), ("to", "text")))


TEMPLATES: dict[str, Callable[[random.Random], Program]] = {
    "reduce": t_reduce, "argbest": t_argbest, "number": t_number, "string": t_string, "prefix": t_prefix,
    "pairs": t_pairs, "stack": t_stack, "map": t_map, "runs": t_runs, "sort": t_sort, "search": t_search,
    "text_numbers": t_text_numbers,
}
WEIGHTS = {"reduce": 4, "argbest": 1, "number": 2, "string": 3, "prefix": 1, "pairs": 1, "stack": 2, "map": 2,
           "runs": 1, "sort": 1, "search": 1, "text_numbers": 2}


def program_key(p: Program) -> str:
    """Identity of a program's meaning (functions and inputs), ignoring names and comments."""
    return body_key(p) + repr(p.inputs)


def body_key(p: Program) -> str:
    """Identity of a program's functions alone (two programs may differ only in their inputs)."""
    return repr(tuple((f.params, f.returns, f.body) for f in p.functions))


def generate(seed: int, max_per_body: int = 10) -> Iterator[Program]:
    """Distinct programs, forever, deterministic in ``seed``; at most ``max_per_body`` share their functions
    (differing in inputs), so templates with few variants do not crowd out the others."""
    rng = random.Random(seed)
    kinds = list(TEMPLATES)
    weights = [WEIGHTS[k] for k in kinds]
    seen: set[str] = set()
    bodies: Counter[str] = Counter()
    while True:
        p = TEMPLATES[rng.choices(kinds, weights)[0]](rng)
        key, body = program_key(p), body_key(p)
        if key not in seen and bodies[body] < max_per_body:
            seen.add(key)
            bodies[body] += 1
            yield p


def programs(n: int, seed: int) -> list[Program]:
    out = []
    for p in generate(seed):
        out.append(p)
        if len(out) == n:
            return out
    return out


__all__ = ["generate", "programs", "program_key", "TEMPLATES", "Break", "Pop"]
