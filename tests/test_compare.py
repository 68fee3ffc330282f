"""tools/compare.py --smoke: the comparison pipeline end to end on toy sizes (equal parameters,
equal budget, table + JSON + plot, the marked block of a markdown file filled in)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_compare_smoke_writes_table_json_plot_and_docs(tmp_path):
    from hybrid.train.data import BUILTIN

    doc = tmp_path / "docs" / "comparison.md"
    doc.parent.mkdir()
    doc.write_text("# Comparison\n\nbefore\n<!-- comparison:begin -->\nold table\n<!-- comparison:end -->\nafter\n")
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "compare.py"),
            "--smoke",
            "--corpus",
            str(BUILTIN),
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--docs",
            str(doc),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "comparison.json").read_text())
    models = {m["arch"]: m for m in res["models"]}
    assert set(models) == {"transformer", "par", "attn-qrnn", "hybrid"}
    params = [m["params"] for m in models.values()]
    assert max(params) / min(params) < 1.15  # equal parameter counts (toy sizes round coarsely)
    assert len({m["tokens"] for m in models.values()}) == 1  # equal budget
    for m in models.values():
        assert m["pattern"] and m["curve"] and 0 < m["valid_bpc"] < 9 and 0 < m["test_bpc"] < 9
        assert m["valid_tokens"] > 0 and m["test_tokens"] > 0
    assert set(res["speed_ms_per_step"]) == set(models)
    assert "Hybrid Transformer" in res["verdict"] and "Transformer baseline" in res["verdict"]
    png = (out / "comparison.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    table = (out / "comparison.md").read_text()
    assert "| Hybrid Transformer |" in table and "](comparison.png)" in table
    text = doc.read_text()
    assert "old table" not in text and "| PAR Transformer |" in text and text.endswith("after\n")
    assert "](../results/comparison.png)" in text  # the image path is relative to the document
