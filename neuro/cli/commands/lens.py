"""lens: the logit lens for one program (what each block already predicts as the next token)."""

from __future__ import annotations

from neuro.cli import command, open_model, read_code_file


def _options(p) -> None:
    p.add_argument("--code-file", help="the program to read (UTF-8 text)")
    p.add_argument("--layers", type=int, nargs="+", help="blocks to read (default: all)")
    p.add_argument("-k", type=int, default=5, help="top predictions kept per position (default 5)")
    p.add_argument("--per-token", action="store_true", help="also list each layer's top-1 at every token")


@command("lens", "logit lens for one program: next-token loss, accuracy and agreement with the output per layer",
         _options)
def cmd_lens(args) -> tuple[dict, str]:
    from neuro.analysis.lens import logit_lens

    code = read_code_file(args.code_file, "the program to read")
    loaded = open_model(args)
    lens = logit_lens(loaded, code, args.layers, top_k=args.k, max_length=args.max_length)
    text = f"{len(lens.token_ids)} tokens\n" + lens.layer_summary().round(3).to_string(index=False)
    if args.per_token:
        rows = [f"{t:>4} {lens.token_texts[t]!r:<16} " + " ".join(f"{lens.top_texts[i][t][0]!r:<10}"
                                                               for i in range(len(lens.layers)))
                for t in range(len(lens.token_ids))]
        text += "\n\nposition, token, top-1 next token per layer " + str(lens.layers) + "\n" + "\n".join(rows)
    return {"model": loaded.identity, **lens.summary(per_token=args.per_token)}, text
