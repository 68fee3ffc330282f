"""`hybrid export`. Heavy imports (torch, onnx, onnxruntime) happen inside the command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def export(
    run_dir: Path = typer.Argument(
        ..., help="A training run directory (config.json, tokenizer.json, model.safetensors)."
    ),
    out: Path = typer.Option(..., "--out", help="The model directory to write."),
    quantize: str = typer.Option(
        "int8,int4", help="Quantized variants besides fp32: int8, int4, both (comma-separated) or none."
    ),
    opset: Optional[int] = typer.Option(None, help="ONNX opset (default 20; 18 for onnxruntime older than 1.17)."),
    probe: Optional[Path] = typer.Option(
        None, help="Text file for the self-check (default: the run's own test split, held out from training)."
    ),
    check: bool = typer.Option(True, help="Run the self-check (PyTorch vs onnxruntime parity, bpc of every variant)."),
    overwrite: bool = typer.Option(False, help="Replace an existing model directory."),
    ort: bool = typer.Option(
        False, "--ort", help="Also write ORT-format files (.ort) for onnxruntime-mobile (Android, iOS)."
    ),
    fused_attention: bool = typer.Option(
        True,
        help="Attention memory's first pass as onnxruntime's GroupQueryAttention (com.microsoft); "
        "--no-fused-attention: plain ONNX only, for runtimes other than onnxruntime.",
    ),
    progress: bool = typer.Option(True, help="Print progress."),
):
    """Export a trained run to a self-checked ONNX model directory (fp32, int8, int4)."""
    from hybrid.export.exporter import export_run

    probe_text = None
    if probe is not None:
        from hybrid.runtime.files import read_text

        probe_text = read_text(probe, 256 << 20, "probe text")  # a regular file (not a FIFO or /dev/zero)
    report = export_run(
        run_dir,
        out,
        quantize=quantize,
        opset=opset,
        probe_text=probe_text,
        check=check,
        progress=progress,
        overwrite=overwrite,
        ort=ort,
        fused_attention=fused_attention,
    )
    typer.echo(summary(report))


def summary(report: dict) -> str:
    """A few lines for the terminal; export_report.json has everything."""
    lines = [f"opset {report['opset']}, {report['graph']['nodes']} nodes, {report['graph']['scan_nodes']} Scan"]
    if report.get("checked"):
        par = report["parity"]
        lines.append(
            f"parity: max |logit diff| {max(v['max_abs'] for v in par['lengths'].values()):.2e} "
            f"(relative {par['max_rel']:.2e}, limit {par['limit_rel']:g}) at lengths "
            f"{', '.join(par['lengths'])}"
        )
    if report.get("probe"):
        probe = report["probe"]
        lines.append(
            f"self-check text: {probe['source']} ({probe['tokens']:,} tokens scored as "
            f"{probe['streams']} streams x {probe['segment']}-token segments, as hybrid eval scores)"
        )
    metric = report["metric"]
    lines.append(f"{'variant':<8} {'MiB':>8} {'of fp32':>8} {metric:>8} {'vs fp32':>8} {'KL':>9} {'top-1':>7}")
    variants = report.get("variants", {})
    for name in ["pytorch", *report["files"]]:
        f = report["files"].get(name)
        r = variants.get(name, {})
        size = f"{f['bytes'] / 2**20:8.2f} {100 * f['fraction_of_fp32']:7.1f}%" if f else f"{'':>8} {'':>8}"
        val = f"{r[metric]:8.4f}" if metric in r else f"{'':>8}"
        rel = f"{100 * r['vs_fp32']:+7.2f}%" if "vs_fp32" in r else f"{'':>8}"
        kl = f"{r['kl_vs_fp32']:9.2e}" if "kl_vs_fp32" in r else f"{'':>9}"
        top = f"{100 * r['top1_vs_fp32']:6.2f}%" if "top1_vs_fp32" in r else f"{'':>7}"
        lines.append(f"{name:<8} {size} {val} {rel} {kl} {top}")
    for v, r in report.get("ort", {}).items():
        lines.append(f"{r['file']}: {r['bytes'] / 1e6:.2f} MB, max |logit diff| vs .onnx {r['max_abs_vs_onnx']:.2e}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command()(export)
