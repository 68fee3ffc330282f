"""tools/probe_gqa.py: GroupQueryAttention inside an If writes into a buffer bound as both past and present."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("probe_gqa", ROOT / "tools" / "probe_gqa.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


@pytest.mark.parametrize("past", [1, 5, 30])
def test_the_new_key_and_value_land_in_the_shared_buffer_and_the_output_matches_numpy(past):
    res = tool.probe(heads=4, d_head=16, slots=33, past=past)
    assert res["write_error"] == 0.0  # the very values, at slot `past` of the shared buffer
    assert res["output_error"] < 1e-5


def test_bad_sizes_are_one_usage_line(capsys):
    with pytest.raises(SystemExit):
        tool.main(["--past", "600"])
    assert "0 < past < slots" in capsys.readouterr().err
