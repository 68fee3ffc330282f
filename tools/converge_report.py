"""The converged comparison's table, verdict and plot, built from the per-run records that
tools/converge.py writes (results/convergence/runs/<corpus>/<size>/<arch>-seed<k>.json).

Only the records are read, so the report can be rebuilt at any time (`converge.py --report`),
also from a plan that is still running: groups with fewer seeds than planned say so.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from hybrid.runtime.files import atomic_write_json, atomic_write_text, read_json, replace_marked

LABELS = {
    "transformer": "Transformer",
    "par": "PAR Transformer",
    "attn-qrnn": "Attn-QRNN",
    "hybrid": "Hybrid Transformer",
}
ORDER = list(LABELS)
COLORS = {"transformer": "tab:blue", "par": "tab:orange", "attn-qrnn": "tab:green", "hybrid": "tab:red"}
MARK_BEGIN, MARK_END = "<!-- convergence:begin -->", "<!-- convergence:end -->"
CORPUS_LABELS = {"tinyshakespeare": "Tiny Shakespeare (bytes, bpc)", "wikitext-2": "WikiText-2 (words, perplexity)"}


def read_records(out: Path) -> list[dict]:
    recs = []
    for p in sorted((out / "runs").glob("*/*/*.json")):
        rec = read_json(p, "run record")
        if rec.get("format") == "hybrid-convergence-run":
            recs.append(rec)
    return recs


def summarize(values: list[float]) -> dict:
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def groups(recs: list[dict]) -> dict:
    """{(corpus, size): {arch: {valid, test, tokens, ...}}}"""
    out: dict = {}
    for r in recs:
        m = r["metric"]
        g = out.setdefault((r["corpus"], r["size"]), {}).setdefault(r["arch"], {"runs": []})
        g["runs"].append(r)
    for table in out.values():
        for arch, g in table.items():
            runs = sorted(g["runs"], key=lambda r: r["seed"])
            m = runs[0]["metric"]
            g.update(
                metric=m,
                params=runs[0]["params"],
                pattern=runs[0]["pattern"],
                d_model=runs[0]["d_model"],
                d_inner=runs[0]["d_inner"],
                seeds=[r["seed"] for r in runs],
                valid=summarize([r[f"valid_{m}"] for r in runs]),
                test=summarize([r[f"test_{m}"] for r in runs]),
                best_tokens=summarize([r["best_tokens"] for r in runs]),
                stops=sorted({r["stop"] for r in runs}),
            )
    return out


def separated(a: dict, b: dict) -> bool:
    """Whether two models' seed ranges do not overlap: the gap is larger than the spread."""
    return a["n"] > 1 and b["n"] > 1 and (a["max"] < b["min"] or b["max"] < a["min"])


def verdict(table: dict, planned_seeds: int) -> str:
    missing = [LABELS[a] for a in ("hybrid", "transformer") if a not in table]
    if missing:
        return f"Not yet measured: the {' and the '.join(missing)} has no finished run yet." + still_improving(table)
    h, t = table["hybrid"], table["transformer"]
    m = h["metric"]
    n = min(h["test"]["n"], t["test"]["n"])
    d = h["test"]["mean"] - t["test"]["mean"]
    fmt = "{:.4f}" if m == "bpc" else "{:.2f}"
    gap = (
        "larger than the seed-to-seed spread (the seeds' ranges do not overlap)"
        if separated(h["test"], t["test"])
        else "within the seed-to-seed spread (the seeds' ranges overlap)"
    )
    if n < 2:
        gap = "spread not yet measured (one seed)"
    word = "beats" if d < 0 else "does not beat"
    if d < 0 and separated(h["test"], t["test"]):
        survives = "its advantage survives convergence"
    elif d < 0:
        survives = "ahead on the mean, but not by more than the spread"
    else:
        survives = "its advantage does not survive convergence"
    best = min(table.values(), key=lambda g: g["test"]["mean"])
    caveat = still_improving(table)
    text = (
        f"{'Trained to convergence' if not caveat else 'At the token ceiling (not all runs converged)'}, "
        f"the Hybrid Transformer **{word}** the Transformer baseline ({survives}): test {m} "
        f"{fmt.format(h['test']['mean'])} vs {fmt.format(t['test']['mean'])} (mean of {n} seed"
        f"{'s' if n != 1 else ''}, {d:+.4f}), {gap}. Best of the four on test: "
        f"{LABELS[best['runs'][0]['arch']]} ({fmt.format(best['test']['mean'])})."
    )
    if n < planned_seeds:
        text += f" Incomplete: {n} of {planned_seeds} planned seeds so far."
    return text + caveat


def still_improving(table: dict) -> str:
    """A caveat for runs whose best checkpoint is their last, at the token ceiling: the budget
    stopped them, not the patience rule, so their figures are not converged ones."""
    runs = [r for g in table.values() for r in g["runs"]]
    cut = [r for r in runs if r["stop"] == "ceiling" and r["best_step"] == r["steps"]]
    if not cut:
        return ""
    names = ", ".join(sorted({LABELS[r["arch"]] for r in cut}))
    return (
        f" {len(cut)} of {len(runs)} runs ({names}) were still improving when they reached the token ceiling: "
        "their figures are the budget's, not converged ones."
    )


def markdown(res: dict, doc_dir: Path | None) -> str:
    lines = []
    plan = res.get("plan") or {}
    for key, table in res["tables"].items():
        corpus, size = key.split("|")
        info = plan.get("corpora", {}).get(corpus, {})
        first = next(iter(table.values()))
        m = first["metric"]
        fmt = (lambda v: f"{v:.4f}") if m == "bpc" else (lambda v: f"{v:.2f}")
        head = f"**{CORPUS_LABELS.get(corpus, corpus)}, about {size} parameters.**"
        if info:
            st = info["split_tokens"]
            head += (
                f" {info['name']}: train {st['train']:,} / valid {st['valid']:,} / test {st['test']:,} tokens; "
                f"validation on the whole valid split every {info['eval_every']} steps of "
                f"{info['tokens_per_step']:,} tokens, stop after {info['patience']} without improvement or at "
                f"{info['epochs']} epochs ({info['ceiling_steps'] * info['tokens_per_step']:,} tokens); "
                f"scores of the best checkpoint."
            )
        lines += [
            head,
            "",
            f"| model | pattern | parameters | seeds | tokens to best (mean) | stopped by | "
            f"valid {m} (mean ± sd) | test {m} (mean ± sd) | test range |",
            "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
        ]
        for arch in ORDER:
            if arch not in table:
                continue
            g = table[arch]
            lines.append(
                f"| {LABELS[arch]} | `{g['pattern']}` | {g['params']:,} | {g['valid']['n']} | "
                f"{g['best_tokens']['mean']:,.0f} | {', '.join(g['stops'])} | "
                f"{fmt(g['valid']['mean'])} ± {fmt(g['valid']['std'])} | "
                f"{fmt(g['test']['mean'])} ± {fmt(g['test']['std'])} | "
                f"{fmt(g['test']['min'])}-{fmt(g['test']['max'])} |"
            )
        lines += ["", res["verdicts"][key], ""]
    png = Path(res["files"]["png"])
    rel = os.path.relpath(png, doc_dir) if doc_dir is not None else png.name
    lines += [
        f"![validation curves of every run]({rel})",
        "",
        f"Regenerate with `{plan.get('command', 'python tools/converge.py')}` (resumable; "
        f"`--report` rebuilds this block from the records in results/convergence/runs/).",
    ]
    return "\n".join(lines) + "\n"


def plot(recs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["corpus"], r["size"]) for r in recs})
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4.2), squeeze=False)
    for ax, (corpus, size) in zip(axes[0], keys):
        seen = set()
        for r in sorted(recs, key=lambda r: (ORDER.index(r["arch"]), r["seed"])):
            if (r["corpus"], r["size"]) != (corpus, size):
                continue
            m = r["metric"]
            xs = [p["tokens"] / 1e6 for p in r["curve"]]
            ys = [p[m] for p in r["curve"]]
            label = LABELS[r["arch"]] if r["arch"] not in seen else None
            seen.add(r["arch"])
            ax.plot(xs, ys, "-", color=COLORS[r["arch"]], alpha=0.8, lw=1.2, label=label)
            ax.plot([r["best_tokens"] / 1e6], [r[f"valid_{m}"]], "o", color=COLORS[r["arch"]], ms=4)
        ys_all = [p[r["metric"]] for r in recs if (r["corpus"], r["size"]) == (corpus, size) for p in r["curve"]]
        lo = min(ys_all)
        ax.set_ylim(lo - 0.03 * abs(lo), lo + 0.35 * abs(lo))
        ax.set_xlabel("training tokens (millions)")
        ax.set_ylabel(f"valid {recs[0]['metric'] if recs else ''}".strip())
        ax.set_title(f"{CORPUS_LABELS.get(corpus, corpus)}, {size}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Validation during training, every seed (dots: best checkpoint)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_docs(text_of, docs: list[Path], log) -> list[str]:
    done = []
    for doc in docs:
        if doc.exists() and replace_marked(doc, MARK_BEGIN, MARK_END, text_of(doc.parent.resolve())):
            done.append(str(doc))
            log(f"updated {doc}")
    return done


def _public(options: list[str]) -> list[str]:
    """The command line without the options that name this machine's folders (--out, --runs,
    --cache-dir with their value, --docs with its files)."""
    out, i = [], 0
    while i < len(options):
        a = options[i]
        if a in ("--out", "--runs", "--cache-dir"):
            i += 2
            continue
        if a == "--docs":
            i += 1
            while i < len(options) and not options[i].startswith("-"):
                i += 1
            continue
        out.append(a)
        i += 1
    return out


def _in_repo(path: str) -> str:
    """A path inside a checkout of this repository as a relative one (plan.json is committed)."""
    p = Path(path)
    for root in p.parents:
        if (root / "tools" / "converge.py").is_file():
            return str(p.relative_to(root))
    return path


def write_plan(out: Path, corpora: dict, args, argv: list[str]) -> None:
    """out/plan.json: what the report says about each corpus, merged over invocations that ran
    parts of the plan."""
    path = out / "plan.json"
    plan = read_json(path, "plan") if path.exists() else {}
    shown = {k: dict(c, source=dict(c["source"], source=_in_repo(c["source"]["source"]))) for k, c in corpora.items()}
    plan.setdefault("corpora", {}).update(shown)
    plan.update(
        seeds=args.seeds,
        sizes=args.sizes,
        archs=args.archs,
        command=" ".join(["python tools/converge.py", *_public(argv)]),
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, plan)


def build(out: Path, docs: list[Path], log) -> dict | None:
    recs = read_records(out)
    if not recs:
        log(f"no finished runs in {out / 'runs'} yet: nothing to report")
        return None
    plan_path = out / "plan.json"
    plan = read_json(plan_path, "plan") if plan_path.exists() else {}
    planned = len(plan.get("seeds", [])) or 3
    tabs = groups(recs)
    files = {
        "md": str(out / "convergence.md"),
        "json": str(out / "convergence.json"),
        "png": str(out / "convergence.png"),
    }
    res = {
        "format": "hybrid-convergence",
        "version": 1,
        "plan": plan,
        "files": files,
        "tables": {f"{c}|{s}": t for (c, s), t in sorted(tabs.items())},
        "verdicts": {f"{c}|{s}": verdict(t, planned) for (c, s), t in sorted(tabs.items())},
    }
    plot(recs, Path(files["png"]))
    res["markdown"] = markdown(res, out.resolve())
    atomic_write_text(files["md"], res["markdown"])
    summary = {
        k: {
            a: {x: g[x] for x in ("params", "pattern", "seeds", "valid", "test", "best_tokens", "stops")}
            for a, g in t.items()
        }
        for k, t in res["tables"].items()
    }
    atomic_write_text(
        files["json"], json.dumps({"plan": plan, "tables": summary, "verdicts": res["verdicts"]}, indent=2) + "\n"
    )
    res["docs_updated"] = update_docs(lambda d: markdown(res, d), docs, log)
    return res
