"""`hybrid eval`, `hybrid generate`, `hybrid bench`: the runtime on the command line.

Only typer and the standard library at the top: numpy and onnxruntime load inside the commands,
and torch never does here. The two PyTorch paths (`eval RUN_DIR`, `bench --run-dir`) live in
train/eager.py, which train/commands.py hands to this module (PYTORCH_PATHS) when it registers.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from hybrid.runtime.errors import HybridError

# Filled by hybrid.train.commands.register: "eval_run" (score a training run in PyTorch) and
# "run_bench" (bench with eager PyTorch side by side). runtime/ imports nothing above it.
PYTORCH_PATHS: dict = {}

VARIANT_HELP = "auto (int8 if exported, else fp32), fp32, int8 or int4."
PROVIDER_HELP = "onnxruntime execution provider: cpu, cuda, coreml, ... or a full provider name."


def _fmt_metric(res: dict) -> str:
    m = res["metric"]
    return f"{m} {res[m]:.4f}"


def _kl_base_model(model_dir: Path, kl_base: str, threads: int, provider: str):
    """--kl-base: a variant name means that variant of this model, anything else another model's fp32."""
    from hybrid.runtime.model import Model
    from hybrid.runtime.modeldir import VARIANTS

    if kl_base in VARIANTS:
        return Model(model_dir, variant=kl_base, threads=threads, provider=provider)
    return Model(kl_base, variant="fp32", threads=threads, provider=provider)


def eval_command(
    model_dir: Path = typer.Argument(
        ...,
        help="Exported model directory (or a training run directory: "
        "scored with PyTorch, for comparison; needs torch).",
    ),
    file: Path = typer.Argument(..., help="UTF-8 text file to score."),
    variant: str = typer.Option("auto", help=VARIANT_HELP),
    streams: int = typer.Option(16, help="Parallel streams B (the text is cut into B contiguous parts)."),
    segment: int = typer.Option(128, help="Tokens per graph call per stream; state carries across segments."),
    ctx: int = typer.Option(
        0, help="llama.cpp protocol: chunks of N tokens, fresh state per chunk, second half scored (0 = off)."
    ),
    kl_base: Optional[str] = typer.Option(
        None,
        "--kl-base",
        help="Reference for KL divergence and top-1 agreement: a variant of this model (fp32) or another model directory.",
    ),
    max_tokens: int = typer.Option(0, help="Score only the first N tokens (0 = the whole file)."),
    threads: int = typer.Option(0, help="onnxruntime intra-op threads (0 = its default)."),
    provider: str = typer.Option("cpu", help=PROVIDER_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    progress: bool = typer.Option(True, help="Show progress on stderr (a bar on a terminal, else a line every 10 s)."),
):
    """Bits per character (byte models) or perplexity (word models) of a text file, on this device."""
    if _is_training_run(model_dir):
        return _pytorch_path("eval_run", model_dir)(model_dir, file, streams, segment, max_tokens, json_out)
    from hybrid.runtime.evaluate import evaluate
    from hybrid.runtime.model import Model
    from hybrid.runtime.textfile import open_text

    _note_threads(threads)
    model = Model(model_dir, variant=variant, threads=threads, provider=provider)
    base = None if kl_base is None else _kl_base_model(model_dir, kl_base, threads, provider)
    source = open_text(file, model.tokenizer)
    try:
        res = evaluate(
            model,
            source,
            streams=streams,
            segment=segment,
            ctx=ctx,
            base=base,
            max_tokens=max_tokens,
            progress=progress,
            name=str(file),
        )
    finally:
        source.close()
    res["file"] = str(file)
    if json_out:
        typer.echo(json.dumps(res, indent=2))
        return
    how = (
        f"ctx {res['ctx']}: {res['chunks']} chunks, second halves scored"
        if res["protocol"] == "ctx"
        else f"{res['streams']} streams x {res['segment']}-token segments"
    )
    typer.echo(
        f"{file}: {_fmt_metric(res)}  ({res['tokens']:,} tokens scored; {how}; "
        f"{res['variant']}; {res['tokens_per_s']:,.0f} tokens/s)"
    )
    if res.get("unknown_tokens"):
        n = res["unknown_tokens"]
        typer.echo(f"note: {n:,} word{'s' if n != 1 else ''} outside the vocabulary scored as <unk>")
    if res["protocol"] == "streams" and res["tokens_processed"] // res["streams"] < res["segment"]:
        typer.echo(
            f"note: each of the {res['streams']} streams holds only {res['tokens_processed'] // res['streams']} "
            f"tokens, so tokens see little context and the {res['metric']} reads high; "
            f"use fewer --streams for a text this short",
            err=True,
        )
    if "kl" in res:
        kl = res["kl"]
        typer.echo(
            f"vs {kl['base']}: KL {kl['mean']:.5f} nats/token (max {kl['max']:.4f}), "
            f"top-1 agreement {100 * kl['top1_agreement']:.2f}%, base {res['metric']} "
            f"{kl['base_' + res['metric']]:.4f}"
        )


def _pytorch_path(name: str, run_dir: Path):
    if name not in PYTORCH_PATHS:
        raise HybridError(
            f"{run_dir}: a training run; using it needs the train stage "
            f"(pip install 'hybrid[train]'), or export it first: hybrid export {run_dir} --out MODEL_DIR"
        )
    return PYTORCH_PATHS[name]


def _note_threads(threads: int) -> None:
    cpus = os.cpu_count() or 1
    if isinstance(threads, int) and threads > cpus:
        typer.echo(
            f"note: {threads} threads on {cpus} CPUs: onnxruntime's threads will wait on each other "
            f"(usually much slower; 0 picks a good default)",
            err=True,
        )


def _is_training_run(path: Path) -> bool:
    from hybrid.runtime.modeldir import config_format

    return config_format(path) == "hybrid-run"


def generate(
    model_dir: Path = typer.Argument(..., help="Exported model directory."),
    prompt: str = typer.Option("", help="Text to continue (empty: start at the beginning of a line)."),
    max_tokens: int = typer.Option(200, help="Tokens to generate at most."),
    temperature: float = typer.Option(0.8, help="Softmax temperature; 0 = greedy."),
    top_k: int = typer.Option(0, help="Sample among the k most likely tokens (0 = off)."),
    top_p: float = typer.Option(1.0, help="Nucleus sampling: the smallest set with this much probability (1 = off)."),
    seed: Optional[int] = typer.Option(None, help="Random seed for a reproducible generation."),
    stop: List[str] = typer.Option([], help="Stop at this string (repeatable); it is not printed."),
    variant: str = typer.Option("auto", help=VARIANT_HELP),
    threads: int = typer.Option(0, help="onnxruntime intra-op threads (0 = its default)."),
    provider: str = typer.Option("cpu", help=PROVIDER_HELP),
    stats: bool = typer.Option(True, help="Print speed on stderr at the end."),
):
    """Continue a prompt, printing tokens as they are generated."""
    from hybrid.runtime.model import Model

    _note_threads(threads)
    model = Model(model_dir, variant=variant, threads=threads, provider=provider)
    unknown = model.tokenizer.unknown_words(prompt)
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        typer.echo(f"note: {len(unknown)} prompt word(s) not in the vocabulary, fed as <unk>: {shown}", err=True)
    session = model.session()
    session.feed(prompt)
    pieces = session.stream(
        max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, stop=stop, final=True
    )
    sys.stdout.write(prompt)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    if stats:
        st = session.last_stats
        typer.echo(
            f"[{st['tokens']} tokens, {st['ms_per_token']:.2f} ms/token, {model.variant}"
            f"{', stopped at a stop string' if st['stopped'] else ''}]",
            err=True,
        )


def bench(
    model_dir: Path = typer.Argument(..., help="Exported model directory."),
    variants: str = typer.Option("fp32,int8,int4", help="Comma-separated variants to measure (those exported)."),
    threads: str = typer.Option(
        "", help="Comma-separated thread counts to sweep (default: 1, 2, 4, ... up to the CPU count)."
    ),
    reps: int = typer.Option(5, help="Repetitions per test (mean ± std)."),
    prompt_len: int = typer.Option(512, help="Prompt-processing test: tokens in one stream."),
    gen_tokens: int = typer.Option(64, help="Generation test: tokens generated per repetition."),
    streams: int = typer.Option(16, help="Evaluation test: parallel streams B."),
    segment: int = typer.Option(128, help="Evaluation test: tokens per stream per graph call."),
    run_dir: Optional[Path] = typer.Option(
        None, help="The training run of this model: also time eager PyTorch on it (needs torch)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
):
    """Speed in the manner of llama-bench: prompt processing, evaluation, generation, memory, size."""
    from hybrid.runtime.bench import print_table, run_bench

    try:
        sweep = [int(t) for t in threads.split(",") if t.strip()] if threads else None
    except ValueError:
        raise HybridError(f"--threads must be comma-separated integers, got {threads!r}") from None
    for t in sweep or []:
        _note_threads(t)
    options = dict(
        variants=[v.strip() for v in variants.split(",") if v.strip()],
        threads=sweep,
        reps=reps,
        prompt_len=prompt_len,
        gen_tokens=gen_tokens,
        streams=streams,
        segment=segment,
        log=lambda s: typer.echo(s, err=True),
    )
    if run_dir is not None:
        res = _pytorch_path("run_bench", run_dir)(model_dir, run_dir=run_dir, **options)
    else:
        res = run_bench(model_dir, **options)
    if json_out:
        typer.echo(json.dumps(res, indent=2))
    else:
        print_table(res, typer.echo)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command()(generate)
    app.command()(bench)
