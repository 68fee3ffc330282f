"""`hybrid export`: a trained run -> a self-checked ONNX model directory (docs/model-directory.md).

    export_run(run_dir, out_dir, quantize=("int8", "int4"), opset=None, probe_text=None,
               check=True, progress=True) -> report dict

Steps: load the run (config + safetensors), trace the fp32 graph (QRNN recurrence as one Scan),
check its structure, quantize, write config.json, the tokenizer and onnxruntime-genai's files, run the self-check
(selfcheck.py, on the text probe.py chooses) and write export_report.json. The directory is built under a temporary name
beside `out_dir` and renamed into place only when everything (the self-check included) passed,
so a failure never leaves a half-written or unchecked model directory behind.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from hybrid.export.probe import default_probe_text as default_probe_text  # re-exported: tests read it here
from hybrid.runtime.errors import HybridError
from hybrid.runtime.files import DirLock
from hybrid.runtime.modeldir import FORMAT, config_format

REPORT_FORMAT = "hybrid-export-report"
FP32_RTOL = 1e-4  # max |logit diff| / max |logit|, PyTorch vs ONNX fp32
QUANT_LIMITS = {"int8": 0.01, "int4": 0.03}  # allowed relative increase of bpc (mean NLL) over ONNX fp32
PROBE_STREAMS = 8
# torch.onnx writes opset 18 natively; converting down to 17 produces an invalid Split node.
MIN_OPSET = 18


def parse_quantize(value) -> tuple[str, ...]:
    """("int8", "int4") from "int8,int4", "none", "" or an iterable of names."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [str(i).strip().lower() for i in items if str(i).strip()]
    if items in (["none"], []):
        return ()
    from hybrid.export.quantize import QUANTIZERS

    bad = [i for i in items if i not in QUANTIZERS]
    if bad:
        raise HybridError(f"unknown quantization {bad[0]!r} (use int8, int4, a comma-separated list, or none)")
    return tuple(dict.fromkeys(items))


def _is_model_dir(path: Path) -> bool:
    return config_format(path) == FORMAT


def _prepare_out_dir(out_dir: Path, run_dir: Path, overwrite: bool) -> Path:
    """The output path, resolved and checked: never the run itself or a folder holding it, and
    --overwrite replaces only an empty folder or an earlier export, never any other folder."""
    out = out_dir.resolve()
    if not out.name:
        raise HybridError(f"{out_dir}: not a valid output directory (name a folder for the model)")
    if out == run_dir.resolve() or out in run_dir.resolve().parents:
        raise HybridError(f"{out_dir}: is the run directory or holds it; export to a folder of its own")
    if out.parent.is_dir():
        _recover(out)
    if out.exists() and not out.is_dir():
        raise HybridError(f"{out_dir}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise HybridError(f"{out_dir}: exists and is not empty; pass --overwrite to replace it")
        if not _is_model_dir(out):
            raise HybridError(
                f"{out_dir}: exists and is not an exported model directory; "
                f"--overwrite replaces only those (choose another folder)"
            )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HybridError(f"{out.parent}: cannot create ({e.strerror or e})") from None
    return out


def _recover(out: Path) -> None:
    """Clean up after an export that was killed: put back a model directory left swapped out
    (killed between _install's two renames) and remove unfinished temporaries of dead processes."""
    from hybrid.runtime.files import pid_alive, remove_dead_temporaries

    for p in out.parent.glob(f".{out.name}.old-*"):
        pid = p.name[len(out.name) + 6 :]
        if not out.exists() and pid.isdigit() and not pid_alive(int(pid)):
            os.replace(p, out)
    remove_dead_temporaries(out.parent, out.name)


def _install(tmp: Path, out_dir: Path) -> None:
    """Rename the finished directory into place; an existing one is swapped out, then removed.
    Between the two renames the old directory is kept aside, and put back on any failure or
    interrupt; after a kill -9 there, the next export puts it back (_recover)."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_run(
    run_dir,
    out_dir,
    quantize=("int8", "int4"),
    opset=None,
    probe_text=None,
    check=True,
    progress=True,
    *,
    overwrite: bool = False,
    ort: bool = False,
    fused_attention: bool = True,
) -> dict:
    """Export a run directory to a model directory; returns the report (also export_report.json).
    The destination is locked for the whole export (one writer per directory, also while it does
    not exist yet): a second export to it stops at once with one line. `ort`: also write
    ORT-format files (onnxruntime-mobile), checked against the .onnx ones. `fused_attention`:
    onnxruntime's GroupQueryAttention for the attention memory's first pass (False: plain ONNX
    only, for a runtime other than onnxruntime)."""
    with DirLock(out_dir):
        return _export(
            Path(run_dir), Path(out_dir), quantize, opset, probe_text, check, progress, overwrite, ort, fused_attention
        )


def _export(
    run_dir: Path, out_dir: Path, quantize, opset, probe_text, check, progress, overwrite, ort, fused_attention
) -> dict:
    variants = parse_quantize(quantize)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)

    # Everything that can be wrong with the input is found before anything is written.
    from hybrid.export.probe import probe_tokens as choose_probe
    from hybrid.train.trainer import metric_name

    opset = _check_opset(opset)
    model, model_cfg, train_cfg, run_obj, tokenizer = _load_run(run_dir)
    probe_tokens, probe_source = None, None
    if check:
        probe_tokens, probe_source = choose_probe(run_dir, run_obj["corpus"], tokenizer, probe_text, log)
    out_dir = _prepare_out_dir(out_dir, run_dir, overwrite)

    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        report = _build(
            tmp,
            run_dir,
            model,
            model_cfg,
            train_cfg,
            tokenizer,
            variants,
            opset,
            probe_tokens,
            probe_source,
            metric_name(tokenizer.kind),
            log,
            ort,
            fused_attention,
        )
        (tmp / "export_report.json").write_text(json.dumps(report, indent=2) + "\n")
        if check and not report["ok"]:
            raise HybridError(f"self-check failed: {'; '.join(report['failures'])}; nothing written to {out_dir}")
        _install(tmp, out_dir)
    except OSError as e:
        raise HybridError(f"{out_dir}: could not write the model directory ({e.strerror or e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"wrote {out_dir}")
    return report


def _check_opset(opset) -> int:
    """The opset to write (DEFAULT_OPSET when none is given), one this exporter and onnx can write."""
    import onnx

    from hybrid.export.onnx_graph import DEFAULT_OPSET

    opset = DEFAULT_OPSET if opset is None else int(opset)
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise HybridError(
            f"--opset {opset} is not supported (the exporter writes opset {MIN_OPSET} to "
            f"{onnx.defs.onnx_opset_version()}, the newest this onnx {onnx.__version__} knows)"
        )
    return opset


def _load_run(run_dir: Path):
    """The run's PyTorch model (weights loaded, eval mode), its configs, config.json and tokenizer,
    the tokenizer checked against the model's vocabulary."""
    from hybrid.runtime.tokenizer import load_tokenizer
    from hybrid.train.checkpoint import load_weights
    from hybrid.train.model import HybridLM
    from hybrid.train.trainer import read_run_config

    model_cfg, train_cfg, run_obj = read_run_config(run_dir)
    tokenizer = load_tokenizer(run_dir / "tokenizer.json")
    if tokenizer.vocab_size != model_cfg.vocab_size:
        raise HybridError(
            f"{run_dir / 'tokenizer.json'}: vocabulary of {tokenizer.vocab_size} tokens, "
            f"the model config has vocab_size {model_cfg.vocab_size}"
        )
    model = HybridLM(model_cfg)
    load_weights(model, run_dir / "model.safetensors")
    model.eval()
    return model, model_cfg, train_cfg, run_obj, tokenizer


def _build(
    tmp: Path,
    run_dir: Path,
    model,
    model_cfg,
    train_cfg,
    tokenizer,
    variants,
    opset,
    probe_tokens,
    probe_source,
    metric,
    log,
    ort=False,
    fused_attention=True,
) -> dict:
    t0 = time.perf_counter()
    files, graph = _write_graphs(tmp, run_dir, model, model_cfg, variants, opset, log, fused_attention)
    extra = _write_model_files(tmp, model, model_cfg, tokenizer, files, metric, opset, ort, log)
    report = _report_head(tmp, run_dir, opset, metric, graph, files, checked=probe_tokens is not None)
    if probe_tokens is None:
        from hybrid.runtime.model import Model

        for v in extra.get("ort", {}):  # unchecked, but a file the runtime cannot load fails here
            Model(tmp, v, threads=1, file_format="ort")
        report.update(ok=True, failures=[])
    else:
        report.update(_self_check(tmp, model, model_cfg, train_cfg, variants, probe_tokens, probe_source, metric, log))
        if extra.get("ort"):
            from hybrid.export import ort as ort_files

            log("checking the ORT-format files against the .onnx ones...")
            report["ort"], ort_failures = ort_files.check_ort_files(tmp, extra["ort"], probe_tokens, FP32_RTOL)
            report["failures"] += ort_failures
            report["ok"] = not report["failures"]
    report["seconds"] = time.perf_counter() - t0
    return report


def _write_model_files(tmp: Path, model, model_cfg, tokenizer, files, metric, opset, ort, log) -> dict:
    """Beside the graphs: the tokenizer, onnxruntime-genai's files, the ORT-format files if asked
    for, and config.json naming them all. Returns config.json's extra entries (genai, ort)."""
    from hybrid.export import contract, genai, ort as ort_files
    from hybrid.export.onnx_graph import output_name
    from hybrid.export.signature import graph_state_shapes, uses_attention_mask
    from hybrid.runtime.tokenizer import save_tokenizer

    save_tokenizer(tokenizer, tmp / contract.TOKENIZER)  # the one loaded and checked, not the file again
    shapes = graph_state_shapes(model, 1)
    extra = genai.write_genai_files(tmp, model_cfg.to_dict(), files, tokenizer.kind)
    if ort:
        log("writing ORT-format files (onnxruntime-mobile)...")
        extra["ort"] = ort_files.write_ort_files(tmp, files)
    cfg_json = contract.model_config_json(
        model_cfg.to_dict(),
        shapes,
        {n: output_name(n) for n in shapes},
        metric,
        opset,
        files,
        uses_attention_mask(model),
        extra,
    )
    (tmp / "config.json").write_text(json.dumps(cfg_json, indent=2) + "\n")
    return extra


def _report_head(tmp: Path, run_dir: Path, opset, metric, graph, files, checked: bool) -> dict:
    """export_report.json's facts about the build: what was exported, the files and their sizes,
    the library versions; the self-check's results follow it."""
    import onnx
    import onnxruntime
    import torch

    from hybrid.export import contract

    fp32_bytes = (tmp / files["fp32"]).stat().st_size
    return {
        "format": REPORT_FORMAT,
        "format_version": contract.FORMAT_VERSION,
        "run": str(run_dir),
        "opset": opset,
        "metric": metric,
        "graph": graph,
        "files": {
            v: {"file": f, "bytes": (tmp / f).stat().st_size, "fraction_of_fp32": (tmp / f).stat().st_size / fp32_bytes}
            for v, f in files.items()
        },
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "checked": checked,
    }


def _write_graphs(
    tmp: Path, run_dir: Path, model, model_cfg, variants, opset, log, fused_attention=True
) -> tuple[dict, dict]:
    """Trace the fp32 graph, check its structure, quantize it: ({variant: file name}, graph facts)."""
    import onnx

    from hybrid.export import quantize as q
    from hybrid.export.onnx_graph import (
        assert_no_weight_matmul_in_loops,
        count_nodes,
        count_ops,
        export_onnx,
        weight_matmuls_in_loops,
    )

    log(f"tracing {run_dir} (pattern {model_cfg.pattern}) to ONNX opset {opset}...")
    proto = export_onnx(model, opset=opset, fused_attention=fused_attention)
    ops = count_ops(proto.graph)
    n_qrnn = model_cfg.pattern.count("Q")
    if ops.get("Scan", 0) != n_qrnn:
        raise HybridError(f"exported graph has {ops.get('Scan', 0)} Scan nodes, expected one per QRNN block ({n_qrnn})")
    assert_no_weight_matmul_in_loops(proto, "model.onnx")
    files = {"fp32": q.FILES["fp32"]}
    onnx.save_model(proto, str(tmp / files["fp32"]))
    q.load_session(tmp / files["fp32"])  # a graph onnxruntime refuses fails here, checked or not
    graph = {
        "nodes": count_nodes(proto.graph),
        "scan_nodes": ops.get("Scan", 0),
        "group_query_attention_nodes": count_ops(proto.graph, nested=True).get("GroupQueryAttention", 0),
        "weight_matmuls_in_scan": len(weight_matmuls_in_loops(proto)),
    }
    if not variants:
        return files, graph
    prepared = tmp / ".prepared.onnx"
    log("graph optimisation before quantization (onnxruntime, basic level)...")
    q.prepare(tmp / files["fp32"], prepared)
    for v in variants:
        log(f"quantizing {v}...")
        q.QUANTIZERS[v](prepared, tmp / q.FILES[v])
        files[v] = q.FILES[v]
        qproto = onnx.load(str(tmp / files[v]))
        assert_no_weight_matmul_in_loops(qproto, files[v])
        q.load_session(tmp / files[v])
        left = q.fp32_weight_matmuls(qproto)
        if left:
            raise HybridError(f"{files[v]}: {len(left)} weight matrix products left in fp32 ({', '.join(left[:3])})")
    prepared.unlink()
    return files, graph


def _self_check(tmp: Path, model, model_cfg, train_cfg, variants, probe_tokens, probe_source, metric, log) -> dict:
    """Parity with PyTorch and the quality of every variant, through the runtime's own Model and
    evaluate() on the directory being built (selfcheck.py): the report part of export_report.json."""
    from hybrid.export import selfcheck
    from hybrid.runtime.model import Model
    from hybrid.runtime.scoring import metric_value

    log(f"self-check on {len(probe_tokens) - 1} tokens of {probe_source}...")
    models = {v: Model(tmp, variant=v) for v in ("fp32", *variants)}
    mem = model_cfg.mem_len if "A" in model_cfg.pattern else None
    par = selfcheck.parity(selfcheck.TorchStepper(model), selfcheck.OrtStepper(models["fp32"]), probe_tokens, mem)
    models = {"pytorch": selfcheck.TorchModel(model, models["fp32"]), **models}
    qual = selfcheck.quality(models, probe_tokens, PROBE_STREAMS, train_cfg.seq_len)
    results = qual.pop("variants")
    fp32_nll = results["fp32"]["nll"]
    failures = []
    if not par["max_rel"] <= FP32_RTOL:
        failures.append(f"ONNX fp32 logits differ from PyTorch by {par['max_rel']:.2e} relative (limit {FP32_RTOL:g})")
    for v, r in results.items():
        r[metric] = metric_value(r["nll"], metric)
        if v in QUANT_LIMITS:
            r["vs_fp32"] = r["nll"] / fp32_nll - 1.0
            r["limit"] = QUANT_LIMITS[v]
            r["ok"] = r["vs_fp32"] <= QUANT_LIMITS[v]
            if not r["ok"]:
                failures.append(
                    f"{v} {metric} is {100 * r['vs_fp32']:.2f}% worse than fp32 (limit {100 * QUANT_LIMITS[v]:g}%)"
                )
    return {
        "probe": {"source": probe_source, **qual},
        "parity": {**par, "limit_rel": FP32_RTOL},
        "variants": results,
        "ok": not failures,
        "failures": failures,
    }
