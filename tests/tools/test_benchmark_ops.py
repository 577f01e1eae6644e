"""``tools/benchmark_ops.py``: the table's speed-up column against the baseline row of the same run."""
from helpers.tools import load_tool


def test_speed_up_is_relative_to_the_baseline_of_each_case():
    results = [
        {"case": "bev_pool", "variant": "a", "B": 1, "forward_ms": 7.0, "forward_peak_mb": 640.0,
         "forward_backward_ms": 14.0, "forward_backward_peak_mb": 1300.0},
        {"case": "bev_pool", "variant": "c", "B": 1, "forward_ms": 0.5, "forward_peak_mb": 20.0,
         "forward_backward_ms": 1.0, "forward_backward_peak_mb": 40.0},
        {"case": "msda", "implementation": "pytorch", "queries": 32400, "heads": 8, "points": 20,
         "forward_ms": 3.0, "forward_backward_ms": 9.0},
        {"case": "msda", "implementation": "triton", "queries": 32400, "heads": 8, "points": 20,
         "forward_ms": 1.0, "forward_backward_ms": 2.0},
        {"case": "msda", "implementation": "triton", "error": "RuntimeError: no GPU"},
    ]
    lines = load_tool("benchmark_ops").format_table(results).splitlines()
    assert lines[1].rstrip().endswith("1.0x") and lines[2].rstrip().endswith("14.0x")
    assert "pytorch: 32400 queries" in lines[3] and lines[3].rstrip().endswith("1.0x")
    assert "triton: 32400 queries" in lines[4] and lines[4].rstrip().endswith("4.5x")
    assert "ERROR RuntimeError: no GPU" in lines[5]


def test_toy_sizes_reach_the_bev_case():
    # arange(1, 60, 8) = 1, 9, ..., 57: 8 depth bins; 6 cameras x 8 x 32 x 88 frustum entries
    row = load_tool("benchmark_ops").bev_case("cpu", 1, 0, "forward", "d", 1, depth_step=8.0, channels=8)
    assert (row["depth_bins"], row["channels"], row["entries"]) == (8, 8, 6 * 8 * 32 * 88)
    assert 0 < row["entries_in_grid"] <= row["entries"] and row["forward_ms"] > 0
