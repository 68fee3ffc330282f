"""tools/compare.py's report: the verdict, the markdown table, the plot, and the block it fills
into the docs."""

from __future__ import annotations

import os
from pathlib import Path

from hybrid.runtime.files import replace_marked

LABELS = {
    "transformer": "Transformer",
    "par": "PAR Transformer",
    "attn-qrnn": "Attn-QRNN",
    "hybrid": "Hybrid Transformer",
}
MARK_BEGIN, MARK_END = "<!-- comparison:begin -->", "<!-- comparison:end -->"


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 100_000 else f"{n:,}"


def verdict(res: dict) -> str:
    m = res["metric"]
    rows = {r["arch"]: r for r in res["models"]}
    if "hybrid" not in rows or "transformer" not in rows:
        return ""
    h, t = rows["hybrid"], rows["transformer"]
    dv = h[f"valid_{m}"] - t[f"valid_{m}"]
    dt = h[f"test_{m}"] - t[f"test_{m}"]
    better = "lower" if m in ("bpc", "ppl") else "higher"
    if dv < 0 and dt < 0:
        outcome = "**beats** the Transformer baseline"
    elif dv > 0 and dt > 0:
        outcome = "**does not beat** the Transformer baseline"
    else:
        outcome = "is **level with** the Transformer baseline (better on one split, worse on the other)"
    best = min(res["models"], key=lambda r: r[f"valid_{m}"])
    fmt = (lambda v: f"{v:.4f}") if m == "bpc" else (lambda v: f"{v:.2f}")
    text = (
        f"At equal parameters ({_millions(h['params'])} vs {_millions(t['params'])}) and an equal budget of "
        f"{h['tokens']:,} training tokens, the Hybrid Transformer {outcome} on {res['corpus_name']}: "
        f"valid {m} {fmt(h[f'valid_{m}'])} vs {fmt(t[f'valid_{m}'])} ({dv:+.4f}), test {m} "
        f"{fmt(h[f'test_{m}'])} vs {fmt(t[f'test_{m}'])} ({dt:+.4f}; {better} is better). "
        f"Best of the four on valid: {best['label']} ({fmt(best[f'valid_{m}'])}). "
        f"One seed per model; the seed-to-seed spread was not measured, so differences of a few "
        f"hundredths should not be over-read."
    )
    return text


def markdown(res: dict, doc_dir: Path | None = None) -> str:
    m = res["metric"]
    png = Path(res["files"]["png"])
    rel = os.path.relpath(png, doc_dir) if doc_dir is not None else png.name
    speed = res.get("speed_ms_per_step", {})
    b = res["budget"]
    lines = [
        f"Four architectures at about {_millions(res['target_params'])} parameters, each trained for "
        f"{b['steps']:,} steps of {b['batch_size']} x {b['seq_len']} tokens ({b['tokens']:,} tokens) on "
        f"{res['corpus_name']} ({res['tokenizer']} level; train {res['split_tokens']['train']:,} / valid "
        f"{res['split_tokens']['valid']:,} / test {res['split_tokens']['test']:,} tokens), same seed, data order "
        f"and schedule; {m} over the whole valid and test splits with carried state. "
        f"Regenerate with `{res['command']}`.",
        "",
        f"| model | pattern | d_model | d_inner | parameters | train time (s) | tokens/s | "
        f"ms/step side by side | valid {m} | test {m} |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    fmt = (lambda v: f"{v:.4f}") if m == "bpc" else (lambda v: f"{v:.2f}")
    for r in res["models"]:
        sp = f"{speed[r['arch']]:.0f}" if r["arch"] in speed else "-"
        lines.append(
            f"| {r['label']} | `{r['pattern']}` | {r['d_model']} | {r['d_inner']} | {r['params']:,} | "
            f"{r['train_seconds']:.0f} | {r['tokens_per_s']:,.0f} | {sp} | {fmt(r[f'valid_{m}'])} | "
            f"{fmt(r[f'test_{m}'])} |"
        )
    lines += ["", f"![valid {m} against parameters and against training time]({rel})", ""]
    v = verdict(res)
    if v:
        lines += [v, ""]
    lines.append(
        f"Measured {res['date']} on {res['machine']['cpu_count']} CPU cores "
        f"({res['machine']['platform']}, torch {res['machine']['torch']}, {res['machine']['threads']} "
        f"thread{'s' if res['machine']['threads'] != 1 else ''}); "
        f"the machine may have been shared, so train times are as measured, and the side-by-side "
        f"column (training steps of the four models interleaved round-robin) is the fairer speed comparison."
    )
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = res["metric"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"transformer": "tab:blue", "par": "tab:orange", "attn-qrnn": "tab:green", "hybrid": "tab:red"}
    by_arch: dict[str, list] = {}
    for r in res["models"]:
        by_arch.setdefault(r["arch"], []).append(r)
    for arch, rows in by_arch.items():
        rows = sorted(rows, key=lambda r: r["params"])
        c = colors.get(arch)
        ax1.plot([r["params"] / 1e6 for r in rows], [r[f"valid_{m}"] for r in rows], "o-", color=c, label=LABELS[arch])
        for r in rows:
            ax2.plot(
                [p["seconds"] for p in r["curve"]],
                [p[m] for p in r["curve"]],
                "-",
                color=c,
                label=f"{LABELS[arch]} ({r['params'] / 1e6:.2f}M)",
            )
            ax2.plot([r["curve"][-1]["seconds"]], [r["curve"][-1][m]], "o", color=c)
    ax1.set_xlabel("parameters (millions)")
    ax1.set_ylabel(f"valid {m}")
    ax1.set_title("valid at the end of training")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.set_xlabel("training time (s, as measured)")
    ax2.set_ylabel(f"valid {m}")
    ax2.set_title(f"during training ({res['budget']['tokens']:,} tokens each)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    lows = [p[m] for r in res["models"] for p in r["curve"]]
    if lows:
        lo = min(lows)
        ax2.set_ylim(lo - 0.05 * abs(lo), min(max(lows), lo + 1.0 * max(abs(lo), 1e-9)))
    fig.suptitle(f"{res['corpus_name']}: four architectures at equal parameters and budget", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_docs(res: dict, docs: list[Path], log) -> list[str]:
    done = []
    for doc in docs:
        if doc.exists() and replace_marked(doc, MARK_BEGIN, MARK_END, markdown(res, doc.parent.resolve())):
            done.append(str(doc))
            log(f"updated {doc}")
    return done
