"""``tools/gpu_acceptance.py``: the report survives failing and timed-out steps, the JUnit counts, the
outer-product config, and (slow) the whole ``--cpu-smoke`` run."""
import json
import os
import sys

import pytest

from helpers.tools import load_tool

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_steps_that_fail_or_time_out_are_recorded_and_the_report_is_rewritten(tmp_path):
    tool = load_tool("gpu_acceptance")
    report = tool.Report(str(tmp_path), {"device": "toy"})
    runner = tool.Runner(report, dict(os.environ))
    result = tmp_path / "r.json"
    write = f"import json; json.dump({{'x': 3}}, open({str(result)!r}, 'w'))"
    assert runner.run("writes", [sys.executable, "-c", write], 30, json_out=str(result))
    assert not runner.run("fails", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], 30)
    assert not runner.run("hangs", [sys.executable, "-c", "import time; time.sleep(30)"], 1)
    saved = json.loads((tmp_path / "acceptance.json").read_text())
    steps = {s["step"]: s for s in saved["steps"]}
    assert saved["environment"] == {"device": "toy"}
    assert steps["writes"]["status"] == "ok" and steps["writes"]["result"] == {"x": 3}
    assert steps["fails"]["status"] == "failed (exit 3)" and "boom" in steps["fails"]["output_tail"]
    assert steps["hangs"]["status"] == "timed out after 1 s"
    log = (tmp_path / "acceptance.log").read_text()
    assert "===== fails (failed (exit 3)" in log and "boom" in log


def test_steps_beyond_the_time_budget_are_skipped(tmp_path):
    tool = load_tool("gpu_acceptance")
    runner = tool.Runner(tool.Report(str(tmp_path), {}), dict(os.environ), budget_s=3)
    assert not runner.run("late", [sys.executable, "-c", "print('ran')"], 60)
    step = json.loads((tmp_path / "acceptance.json").read_text())["steps"][0]
    assert step["status"] == "skipped (time budget spent)" and "print" in step["command"]


def test_junit_counts_by_hand(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text('<testsuites><testsuite name="pytest" tests="3" failures="1" errors="0" skipped="1">'
                   '<testcase classname="tests.ops.a" name="test_ok"/>'
                   '<testcase classname="tests.ops.a" name="test_bad"><failure message="x"/></testcase>'
                   '<testcase classname="tests.ops.b" name="test_gpu"><skipped message="needs CUDA"/></testcase>'
                   '</testsuite></testsuites>')
    counts = load_tool("gpu_acceptance").junit_counts(str(xml))
    assert counts == {"tests": 3, "failures": 1, "errors": 0, "skipped": 1, "failed": ["tests.ops.a::test_bad"]}
    assert load_tool("gpu_acceptance").junit_counts(str(tmp_path / "missing.xml")) is None


def test_outer_product_config_switches_every_view_transform_of_the_student(tmp_path):
    import mmdet3d.models  # noqa: F401  (registers the models)
    from mmdet3d.registry import MODELS
    from mmdet3d.utils.config import load_config

    tool = load_tool("gpu_acceptance")
    model = MODELS.build(load_config(tool.outer_product_config(tool.SMALL_STUDENT, str(tmp_path)), []).model)
    camera = model.encoders_student["camera"]
    assert camera["vtransform"].pooling == camera["vtransform2"].pooling == "outer_product"
    default = MODELS.build(load_config(os.path.join(REPO, tool.SMALL_STUDENT), []).model)
    assert default.encoders_student["camera"]["vtransform"].pooling == "depth"


def test_without_cuda_it_says_so_in_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit, match="no CUDA device .*--cpu-smoke"):
        load_tool("gpu_acceptance").main([str(tmp_path)])


@pytest.mark.slow
def test_cpu_smoke_runs_every_step(tmp_path):
    assert load_tool("gpu_acceptance").main([str(tmp_path / "out"), "--cpu-smoke", "--scratch",
                                             str(tmp_path / "scratch"), "--bundle", str(tmp_path / "none")]) == 0
    saved = json.loads((tmp_path / "out" / "acceptance.json").read_text())
    steps = {s["step"]: s for s in saved["steps"]}
    assert list(steps) == ["bundle", "build", "parity", "ops", "data", "data_infos", "student_fp32_depth",
                           "student_fp32_outer_product", "student_bf16_depth", "student_bf16_outer_product",
                           "train_teacher", "train_simdistill"]
    assert all(s["status"] == "ok" or s["status"].startswith("skipped") for s in steps.values())
    assert steps["parity"]["result"]["failures"] == steps["parity"]["result"]["errors"] == 0
    assert {r["case"] for r in steps["ops"]["result"]["results"]} == {"bev_pool", "voxelization", "nms_bev", "msda"}
    for name in ("student_fp32_depth", "student_fp32_outer_product"):
        assert steps[name]["result"]["latency_ms"]["mean"] > 0
    assert steps["train_simdistill"]["result"]["step_ms"]["mean"] > 0
    assert sorted(os.listdir(tmp_path / "out")) == ["acceptance.json", "acceptance.log"]
