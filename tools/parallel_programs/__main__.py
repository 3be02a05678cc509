"""CLI: `python -m tools.parallel_programs sample|write|check ...`."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tools.parallel_programs import LANGS, render
from tools.parallel_programs.documents import LAYOUTS, DropCount, documents, exclusion_index


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.parallel_programs", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("sample", "write"):
        sp = sub.add_parser(name)
        sp.add_argument("--n", type=int, default=5)
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--layout", choices=LAYOUTS, default="pairs")
        sp.add_argument("--exclude", nargs="*", default=None,
                        help="glob patterns of JSONL(.gz) evaluation files (default: the demo builder's)")
        sp.add_argument("--json", action="store_true", help="print a JSON summary")
        if name == "write":
            sp.add_argument("--out", type=Path, required=True)
    sp = sub.add_parser("check", help="run the five renderings of programs and compare their output")
    sp.add_argument("--n", type=int, default=10)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "check":
        from tools.parallel_programs.check import outputs
        from tools.parallel_programs.generate import programs

        progs = programs(args.n, args.seed)
        with tempfile.TemporaryDirectory() as work:
            out = outputs({lang: [render(p, lang, k) for k, p in enumerate(progs)] for lang in LANGS}, Path(work))
        disagree = [k for k in range(len(progs)) if len({out[lang][k] for lang in out}) > 1]
        summary = {"programs": len(progs), "languages": sorted(out), "disagree": disagree}
        print(json.dumps(summary) if args.json else f"{len(progs)} programs in {', '.join(sorted(out))}: "
              f"{len(disagree)} disagree {disagree}")
        return 1 if disagree else 0
    count = DropCount()
    docs = documents(args.n, args.seed, args.layout, exclusion_index(args.exclude), count)
    if args.command == "sample":
        for doc in docs:
            if not args.json:
                print(f"=== {doc.id} ({doc.program}; {', '.join(doc.langs)})\n{doc.text}")
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", encoding="utf-8") as fh:
            for doc in docs:
                rec = {"id": doc.id, "program": doc.program, "key": doc.key, "text": doc.text}
                rec.update({"lang": doc.langs[0]} if len(doc.langs) == 1 else {"langs": list(doc.langs)})
                fh.write(json.dumps(rec) + "\n")
    summary = {"generated": count.generated, "dropped": count.dropped, "kept": count.generated - count.dropped,
               "layout": args.layout, "seed": args.seed}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"# {summary['kept']} documents kept, {summary['dropped']} dropped by decontamination",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
