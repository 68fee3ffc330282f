#!/usr/bin/env python
"""The four architectures trained to convergence: equal parameters, several seeds, two corpora.

    python tools/converge.py                       # the whole plan (hours on a 2-core CPU; resumable)
    python tools/converge.py --jobs 2              # two runs at a time, one per core
    python tools/converge.py --jobs 8 --device cuda:0,cuda:1,cuda:2,cuda:3,cuda:4,cuda:5,cuda:6,cuda:7
    python tools/converge.py --report              # only rebuild the table and plot from results/
    python tools/converge.py --smoke               # the pipeline in a minute, into a temporary folder

Every (corpus, size, architecture, seed) is one `hybrid train` run directory under --runs. A run
trains until its validation score (the whole valid split, carried state) has not improved for
--patience evaluations, or until its token ceiling (--epochs passes over the train split); the
tool then stops it the way Ctrl-C does (it finishes the step and saves), and scores the best
checkpoint on the whole valid and test splits. The finished run's record goes to
results/convergence/runs/...json; a run with a record is skipped, a run killed half-way resumes
from its last checkpoint (`hybrid train --resume`: the same steps as one straight run), so the
plan can be run in pieces, on one machine or on many. Ctrl-C stops every run cleanly.

The learning-rate schedule (warm-up, then cosine to 0.1x) spans the ceiling, so that stopping
early by patience changes nothing before the stop. Sizes, seeds and corpora are the same for
every architecture; the data order is the trainer's (contiguous streams), the same for all runs.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import converge_report as report  # noqa: E402
from converge_plan import ARCHS, CORPORA, PARAM_TOLERANCE, SIZES, WORD_FILE, Job, plan_jobs  # noqa: E402
from converge_runs import converged, done_training, finish, start, valid_history  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# -- the scheduler ------------------------------------------------------------------------------


def existing_record(job: Job, redo: bool) -> dict | None:
    if not job.record.exists() or redo:
        return None
    from hybrid.runtime.files import read_json

    rec = read_json(job.record, "run record")
    if rec.get("plan") != job.plan:
        raise SystemExit(
            f"{job.record}: made with other settings than this plan; pass --redo to train it again "
            f"(the run directory {job.run_dir} is then continued or replaced)"
        )
    return rec


def run_plan(jobs: list[Job], corpora: dict, args, log) -> int:
    """Run every job without a record, --jobs at a time; 0 if all finished."""
    pending = [j for j in jobs if existing_record(j, args.redo) is None]
    log(f"{len(jobs) - len(pending)} of {len(jobs)} runs already have records; {len(pending)} to go")
    running: dict[str, tuple[Job, subprocess.Popen, bool]] = {}
    devices = {name: [] for name in args.device.split(",")}  # device -> names of the runs on it
    failed = 0
    try:
        while pending or running:
            while pending and len(running) < args.jobs:
                job = pending.pop(0)
                stop = done_training(job)
                if stop:  # trained before a kill, not yet scored
                    finish(job, corpora[job.corpus], stop, args)
                    continue
                device = min(devices, key=lambda d: len(devices[d]))  # the least busy
                devices[device].append(job.name)
                log(f"training {job.name} ({job.plan['params']:,} parameters) on {device}")
                running[job.name] = (job, start(job, args, corpora[job.corpus]["source"], device), False)
            time.sleep(args.poll)
            for name, (job, proc, stopped) in list(running.items()):
                if not stopped and proc.poll() is None and converged(valid_history(job.run_dir), args.patience):
                    proc.send_signal(signal.SIGINT)  # finish the step, save, exit
                    running[name] = (job, proc, True)
                    continue
                rc = proc.poll()
                if rc is None:
                    continue
                del running[name]
                for names in devices.values():
                    if name in names:
                        names.remove(name)
                stop = done_training(job)
                if stop is None and rc == 130:  # stopped from outside (Ctrl-C, SIGTERM to the run): so is the plan
                    log(f"{job.name} was interrupted (saved; it resumes); stopping the plan")
                    raise KeyboardInterrupt
                if stop is None or rc not in (0, 130):
                    failed += 1
                    log(f"FAILED {job.name}: exit {rc}; see {job.run_dir.parent / 'logs'}")
                    continue
                rec = finish(job, corpora[job.corpus], stop, args)
                m = rec["metric"]
                log(
                    f"done {job.name}: stopped by {stop} at step {rec['steps']:,} (best {rec['best_step']:,}); "
                    f"valid {m} {rec[f'valid_{m}']:.4f}, test {m} {rec[f'test_{m}']:.4f}"
                )
    except KeyboardInterrupt:
        log("interrupted: stopping every run (each saves its checkpoint); run the same command to continue")
        for job, proc, _ in running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for job, proc, _ in running.values():
            proc.wait()
        return 130
    return 1 if failed else 0


# -- command line -------------------------------------------------------------------------------


def _add_plan_arguments(p: argparse.ArgumentParser) -> None:
    """What is trained: corpora, sizes, seeds, architectures, and the training settings."""
    p.add_argument("--corpora", default=",".join(CORPORA), help="which corpora (tinyshakespeare, wikitext-2)")
    p.add_argument(
        "--byte-corpus",
        type=Path,
        default=None,
        help="text file for the byte-level corpus (default: the built-in Tiny Shakespeare)",
    )
    p.add_argument(
        "--word-corpus",
        default=None,
        help="word-level corpus: a text file (default: the WikiText-2 "
        "validation split in tools/corpora, split 90/5/5 by lines), or `wikitext-2` for the real files",
    )
    p.add_argument("--word-path", default=None, help="with --word-corpus wikitext-2: the folder of its files")
    p.add_argument("--sizes", default="1.5M", help=f"model sizes ({', '.join(SIZES)}, or a number)")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--archs", default=",".join(ARCHS))
    p.add_argument("--patience", type=int, default=4, help="evaluations without improvement before stopping")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--dropout", type=float, default=0.1)


def _add_machine_arguments(p: argparse.ArgumentParser) -> None:
    """Where the runs go: parallel jobs, threads, devices, folders."""
    p.add_argument("--jobs", type=int, default=1, help="runs trained at the same time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument(
        "--device",
        default="cpu",
        help="device of every run, or a comma-separated list (cuda:0,cuda:1,...): each run goes to the least busy one",
    )
    p.add_argument("--runs", type=Path, default=None, help="run directories (default runs/converge)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default results/convergence)")
    p.add_argument(
        "--docs",
        type=Path,
        nargs="*",
        default=None,
        help="markdown files whose convergence markers get the table (default README.md and docs/comparison.md)",
    )
    p.add_argument("--cache-dir", type=Path, default=None, help="token cache folder")


def _add_mode_arguments(p: argparse.ArgumentParser) -> None:
    """What the invocation does: the plan, only its listing, only the report, or the smoke test."""
    p.add_argument("--redo", action="store_true", help="train runs again whose record was made under other settings")
    p.add_argument("--dry-run", action="store_true", help="print the plan (sizes, ceilings, runs) and stop")
    p.add_argument("--report", action="store_true", help="only rebuild the table and plot from the records")
    p.add_argument("--poll", type=float, default=5.0, help=argparse.SUPPRESS)
    p.add_argument("--smoke", action="store_true", help="toy sizes: the whole pipeline in about a minute")


def _apply_smoke(a) -> None:
    """--smoke: toy sizes and corpus slices, into a temporary folder unless --runs/--out/--docs say otherwise."""
    tmp = Path(tempfile.mkdtemp(prefix="hybrid-converge-smoke-"))
    a.sizes, a.patience, a.poll, a.tolerance, a.seeds = ["40000"], 2, 0.5, 0.1, a.seeds[:1]
    a.overrides = {k: dict(epochs=0.1, eval_every=5, batch_size=4, seq_len=32) for k in CORPORA}
    a.byte_corpus, a.word_corpus = smoke_corpora(tmp)
    a.runs = a.runs or tmp / "runs"
    a.out = a.out or tmp / "results"
    a.docs = a.docs if a.docs is not None else []


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_plan_arguments(p)
    _add_machine_arguments(p)
    _add_mode_arguments(p)
    a = p.parse_args(argv)
    a.corpora, a.archs, a.sizes = (s.split(",") for s in (a.corpora, a.archs, a.sizes))
    a.seeds = [int(s) for s in a.seeds.split(",")]
    a.overrides, a.tolerance = {}, PARAM_TOLERANCE
    bad = [c for c in a.corpora if c not in CORPORA] + [x for x in a.archs if x not in ARCHS]
    if bad or a.patience < 1 or a.jobs < 1 or a.threads < 1:
        p.error(f"bad --corpora/--archs {bad}, or --patience/--jobs/--threads below 1")
    if a.smoke:
        _apply_smoke(a)
    a.out = a.out or ROOT / "results" / "convergence"
    a.runs = a.runs or ROOT / "runs" / "converge"
    a.docs = a.docs if a.docs is not None else [ROOT / "README.md", ROOT / "docs" / "comparison.md"]
    return a


def smoke_corpora(tmp: Path) -> tuple[Path, Path]:
    """Small slices of both corpora, so that an epoch is a few steps."""
    from hybrid.train.data import BUILTIN

    byte, word = tmp / "bytes.txt", tmp / "words.txt"
    byte.write_bytes(Path(BUILTIN).read_bytes()[:40_000])
    word.write_text("".join(WORD_FILE.read_text(encoding="utf-8").splitlines(keepends=True)[:400]), encoding="utf-8")
    return byte, word


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    # Explicit handlers: a shell that starts the tool in the background leaves SIGINT ignored,
    # and a job scheduler stops it with SIGTERM; both stop every run the way Ctrl-C does.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    rc = 0
    if not args.report:
        jobs, corpora = plan_jobs(args, log)
        if args.dry_run:
            for j in jobs:
                m = j.plan["model"]
                log(
                    f"{j.name}: {j.plan['params']:,} parameters (d_model {m['d_model']}, d_inner {m['d_inner']}), "
                    f"{j.plan['train']['steps']:,} steps at most, record {'done' if j.record.exists() else 'to do'}"
                )
            return 0
        report.write_plan(args.out, corpora, args, sys.argv[1:] if argv is None else argv)
        rc = run_plan(jobs, corpora, args, log)
    res = report.build(args.out, args.docs, log)
    if res is not None:
        print(res["markdown"])
    return rc


if __name__ == "__main__":
    from hybrid.runtime.errors import HybridError

    try:
        sys.exit(main())
    except HybridError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
