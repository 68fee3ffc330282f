"""ORT-format copies of the exported graphs (`hybrid export --ort`), for onnxruntime-mobile.

onnxruntime's own converter (`onnxruntime.tools.convert_onnx_models_to_ort`, called through its
Python API) writes them with the settings its documentation gives for the CPU of an unknown
device: the `Fixed` optimisation style (optimisations applied before saving; the `Runtime` style
is for NNAPI/CoreML partitioning) at its default level, with the x86-only NCHWc layout
transformer left out, as the converter does for any target other than amd64. So a file made on
an x86 machine runs on ARM phones too; every op it holds has a CPU kernel on both.

Opt-in, because the files double the directory's size and only reduced-size (mobile) builds of
onnxruntime need them: full builds, onnxruntime-genai, Node and the browser run the .onnx files.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

from hybrid.runtime.errors import HybridError, first_line


def ort_name(onnx_name: str) -> str:
    """model.int8.onnx -> model.int8.ort"""
    return onnx_name[: -len(".onnx")] + ".ort"


def convert(onnx_path: Path, out_dir: Path) -> Path:
    """out_dir / <name>.ort from one .onnx file (the converter's scratch files are removed)."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    scratch = out_dir / f".ort-{onnx_path.stem}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it reports each step on stdout
            convert_onnx_models_to_ort(onnx_path, output_dir=scratch, optimization_styles=[OptimizationStyle.Fixed])
        made = scratch / ort_name(onnx_path.name)
        if not made.is_file():
            raise HybridError(f"{onnx_path.name}: onnxruntime's ORT converter wrote no {made.name}")
        target = out_dir / made.name
        made.replace(target)
        return target
    except HybridError:
        raise
    except Exception as e:  # the converter raises whatever onnxruntime raised
        raise HybridError(f"{onnx_path.name}: conversion to ORT format failed ({first_line(e)})") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_ort_files(out_dir: Path, files: dict[str, str]) -> dict[str, str]:
    """variant -> .ort file name, one for every exported variant."""
    return {v: convert(out_dir / f, out_dir).name for v, f in files.items()}


def check_ort_files(model_dir: Path, ort_files: dict[str, str], tokens, limit_rel: float) -> tuple[dict, list[str]]:
    """Each .ort variant against its .onnx twin, both loaded by the runtime (hybrid.runtime.Model):
    logits of one call on the first 512 probe tokens from a fresh stream, and of 64 more tokens
    fed one by one through the runtime's stepper. Returns (report section, failures)."""
    import numpy as np

    from hybrid.runtime.model import Model

    ids = np.asarray(tokens[:512], dtype=np.int64)[None]
    steps = [int(t) for t in tokens[512:576]] or [int(t) for t in tokens[:64]]
    report, failures = {}, []
    for v, name in ort_files.items():
        onnx_model, ort_model = Model(model_dir, v, threads=1), Model(model_dir, v, threads=1, file_format="ort")
        (a, state_a), (b, state_b) = (m.forward(ids, m.initial_state(1)) for m in (onnx_model, ort_model))
        step_a, step_b = onnx_model.stepper(state_a), ort_model.stepper(state_b)
        diffs = [float(np.abs(a - b).max())] + [float(np.abs(step_a.step(t) - step_b.step(t)).max()) for t in steps]
        worst = max(diffs)
        rel = worst / max(float(np.abs(a).max()), 1e-30)
        report[v] = {
            "file": name,
            "bytes": (model_dir / name).stat().st_size,
            "max_abs_vs_onnx": worst,
            "rel_vs_onnx": rel,
            "tokens": ids.shape[1] + len(steps),
        }
        if not rel <= limit_rel:
            failures.append(f"{name} differs from {onnx_model.path.name} by {rel:.2e} relative (limit {limit_rel:g})")
    return report, failures
