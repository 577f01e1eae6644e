"""``tools/experiment.py`` on a toy spec (the toy model of ``toy_components.py``): a teacher, 2 arms x 2 seeds and a
crashing arm; skipping finished runs; resuming a run after the runner is SIGKILLed; keeping the runs that
``results.json`` records when their folders are gone."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from test_train_test_cli import TOY_CONFIG, env

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
EXPERIMENT = os.path.join(REPO, "tools", "experiment.py")


def write_spec(root, name, arms, teacher=True, **extra):
    config = root / "toy.yaml"
    if not config.exists():
        config.write_text(yaml.safe_dump(dict(TOY_CONFIG, max_epochs=1)))
    spec = {"name": name, "out_dir": str(root / name), "metrics": ["mse", "weighted"], "reference": arms[0]["name"],
            "teacher_key": "load_from", "arms": [dict(arm, config=str(config)) for arm in arms], **extra}
    if teacher:
        spec["teacher"] = {"config": str(config), "overrides": {"max_epochs": 2}}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def run_experiment(spec, *args, check=True):
    result = subprocess.run([sys.executable, EXPERIMENT, spec, *args], cwd=REPO, env=env(), capture_output=True,
                            text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def metrics_of(run_dir, epoch=1):
    with open(os.path.join(run_dir, f"metrics_epoch_{epoch}.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiment")
    arms = [{"name": "small", "seeds": [0, 1], "overrides": {"optimizer.lr": 0.005}},
            {"name": "wide", "seeds": [0, 1]},
            {"name": "broken", "seeds": [0], "overrides": {"model.hidden": -1}}]
    spec = write_spec(root, "toy_grid", arms)
    result = run_experiment(spec, "--workers", "2", check=False)
    return root, spec, result


def test_grid_trains_teacher_and_arms_and_reports_the_crash(grid):
    root, spec, result = grid
    assert result.returncode == 1  # one arm failed, the others finished
    out = result.stdout + result.stderr
    assert "FAILED  broken seed 0 (exit 1)" in out and "hidden" in out.split("FAILED  broken seed 0")[1]
    for label in ("teacher", "small seed 0", "small seed 1", "wide seed 0", "wide seed 1"):
        assert f"done    {label}:" in out

    with open(root / "toy_grid" / "results.json") as f:
        results = json.load(f)
    assert results["failed"] == ["broken seed 0"]
    assert sorted((r["arm"], r["seed"]) for r in results["runs"]) == [("small", 0), ("small", 1), ("wide", 0),
                                                                      ("wide", 1)]
    teacher_dir = root / "toy_grid" / "teacher"
    assert results["teacher"]["metrics"]["mse"] == metrics_of(teacher_dir, epoch=2)["toy/mse"]
    for row in results["runs"]:
        run_dir = root / "toy_grid" / row["arm"] / f"seed_{row['seed']}"
        assert row["metrics"] == {"mse": metrics_of(run_dir)["toy/mse"], "weighted": metrics_of(run_dir)["toy/weighted"]}
        assert row["wall_s"] > 0 and len(row["config_sha"]) == 16
        assert row["threads"] == [max(1, (os.cpu_count() or 1) // 2)]  # --workers 2, the spec fixes none
        log = (run_dir / "experiment.log").read_text()
        assert str(teacher_dir / "latest.pth") in log  # each arm started from the teacher trained once


def test_summary_is_mean_and_sample_std_against_the_reference(grid):
    root, _, _ = grid
    with open(root / "toy_grid" / "results.json") as f:
        results = json.load(f)
    values = {arm: [metrics_of(root / "toy_grid" / arm / f"seed_{s}")["toy/mse"] for s in (0, 1)]
              for arm in ("small", "wide")}
    for arm, (a, b) in values.items():
        stats = results["summary"][arm]["metrics"]["mse"]
        assert stats["values"] == [a, b]
        assert stats["mean"] == pytest.approx((a + b) / 2)
        assert stats["std"] == pytest.approx(abs(a - b) / 2 ** 0.5)  # sample std of two values
    small, wide = (sum(v) / 2 for v in (values["small"], values["wide"]))
    assert results["summary"]["wide"]["metrics"]["mse"]["relative"] == pytest.approx((wide - small) / small)
    assert results["summary"]["small"]["metrics"]["mse"]["relative"] == pytest.approx(0.0)
    table = (root / "toy_grid" / "results.md").read_text()
    assert f"| wide | 0, 1 | {wide:.4f} ± {abs(values['wide'][0] - values['wide'][1]) / 2 ** 0.5:.4f}" in table
    assert f"{100 * (wide - small) / small:+.1f} %" in table and "Failed (not in the table): broken seed 0" in table


def test_rerun_skips_finished_runs(grid):
    root, spec, _ = grid
    checkpoint = root / "toy_grid" / "wide" / "seed_0" / "latest.pth"
    before = os.stat(checkpoint).st_mtime_ns
    result = run_experiment(spec, "--dry-run")
    assert "done     wide seed 0:" in result.stdout and "new      broken seed 0:" in result.stdout
    result = run_experiment(spec, check=False)
    assert "5 runs of 3 arms, teacher; 1 to train" in result.stdout
    assert "done    wide seed 0" not in result.stdout + result.stderr
    assert os.stat(checkpoint).st_mtime_ns == before


def test_summarize_rewrites_the_results_of_the_finished_runs(grid):
    root, spec, _ = grid
    results_path = root / "toy_grid" / "results.json"
    with open(results_path) as f:
        before = json.load(f)
    results_path.unlink()
    result = run_experiment(spec, "--summarize")
    assert "results of the finished runs" in result.stdout and "done    " not in result.stdout
    with open(results_path) as f:
        after = json.load(f)
    assert after["runs"] == before["runs"] and after["summary"] == before["summary"]
    assert after["teacher"] == before["teacher"] and after["unfinished"] == ["broken seed 0"]
    walls = ", ".join(f"{r['wall_s'] / 60:.0f}" for r in after["runs"] if r["arm"] == "wide")
    assert walls and f"| {walls} |" in (root / "toy_grid" / "results.md").read_text()


def test_changed_config_is_refused_not_reused(grid, tmp_path):
    root, spec, _ = grid
    with open(spec) as f:
        changed = yaml.safe_load(f)
    changed["arms"][1]["overrides"] = {"optimizer.lr": 0.02}
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(changed))
    result = run_experiment(str(path), check=False)
    assert result.returncode == 2
    err = result.stderr.strip()
    assert "\n" not in err and str(root / "toy_grid" / "wide" / "seed_0") in err and "another config" in err


def test_resumes_a_run_after_the_runner_is_killed(grid):
    root, _, _ = grid
    spec = write_spec(root, "toy_kill", [{"name": "wide", "seeds": [0, 1]}], teacher=False,
                      overrides={"max_epochs": 2, "data.train.delay": 0.1})
    run_dir = root / "toy_kill" / "wide" / "seed_1"
    process = subprocess.Popen([sys.executable, EXPERIMENT, spec], cwd=REPO, env=env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run_dir / "latest.pth").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(1.0)  # the training dies with the runner (PR_SET_PDEATHSIG)
    assert (run_dir / "latest.pth").exists() and not (run_dir / "epoch_2.pth").exists()
    with open(root / "toy_kill" / "results.json") as f:
        midway = json.load(f)  # written when seed 0 finished, before the kill
    assert [r["seed"] for r in midway["runs"]] == [0] and midway["unfinished"] == ["wide seed 1"]
    assert "Not finished yet (not in the table): wide seed 1" in (root / "toy_kill" / "results.md").read_text()

    result = run_experiment(spec)
    assert "1 to train" in result.stdout
    log = (run_dir / "experiment.log").read_text()
    assert "resuming" in log and str(run_dir / "latest.pth") in log
    with open(root / "toy_kill" / "results.json") as f:
        row = json.load(f)["runs"][1]
    assert row["seed"] == 1
    # The toy model resumes exactly; the same run uninterrupted gives the same metrics.
    reference = write_spec(root, "toy_ref", [{"name": "wide", "seeds": [1]}], teacher=False,
                           overrides={"max_epochs": 2})
    run_experiment(reference)
    assert row["metrics"]["mse"] == pytest.approx(metrics_of(root / "toy_ref" / "wide" / "seed_1", 2)["toy/mse"],
                                                  rel=1e-6)


def test_fresh_checkout_keeps_recorded_runs_and_retrains_only_what_is_missing(tmp_path):
    import shutil

    spec = write_spec(tmp_path, "toy_fresh", [{"name": "wide", "seeds": [0, 1]}])
    out = tmp_path / "toy_fresh"
    run_experiment(spec)
    with open(out / "results.json") as f:
        first = json.load(f)

    def fresh_checkout():  # run folders hold checkpoints and are not committed; results.json is
        for name in ("teacher", "wide"):
            shutil.rmtree(out / name)

    fresh_checkout()
    assert "recorded wide seed 1:" in run_experiment(spec, "--dry-run").stdout
    result = run_experiment(spec)
    assert "0 to train" in result.stdout and "3 kept from" in result.stdout
    assert not (out / "teacher").exists() and not (out / "wide").exists()
    with open(out / "results.json") as f:
        kept = json.load(f)
    assert kept["runs"] == first["runs"] and kept["teacher"] == first["teacher"] and kept["unfinished"] == []

    # wide seed 1's row lost: its training needs the teacher's checkpoint, so the teacher trains again
    kept["runs"] = [r for r in kept["runs"] if r["seed"] == 0]
    (out / "results.json").write_text(json.dumps(kept))
    dry = run_experiment(spec, "--dry-run").stdout
    assert "retrain  teacher:" in dry and "recorded wide seed 0:" in dry and "new      wide seed 1:" in dry
    result = run_experiment(spec)
    assert "2 to train" in result.stdout and "1 kept from" in result.stdout
    assert "warning" not in result.stdout + result.stderr  # the toy teacher retrains to the same weights
    assert not (out / "wide" / "seed_0").exists() and (out / "wide" / "seed_1" / "latest.pth").exists()
    with open(out / "results.json") as f:
        final = json.load(f)
    by_seed = {r["seed"]: r for r in final["runs"]}
    assert by_seed[0] == first["runs"][0]
    assert by_seed[1]["metrics"] == pytest.approx(first["runs"][1]["metrics"], rel=1e-6)
    assert final["teacher"]["metrics"] == pytest.approx(first["teacher"]["metrics"], rel=1e-6)
    # every run names the teacher it started from: the same weights here, so the table needs no note
    from mmdet3d.utils.checkpoint import weights_sha

    assert by_seed[1]["teacher"] == dict(final["teacher"]["metrics"],
                                         weights_sha=weights_sha(out / "teacher" / "latest.pth"))
    assert by_seed[0]["teacher"]["weights_sha"] == by_seed[1]["teacher"]["weights_sha"]
    assert "trainings of the teacher" not in (out / "results.md").read_text()


def test_results_name_the_teachers_when_the_runs_came_from_several():
    from mmdet3d.apis import experiment as exp

    spec = {"name": "toy", "metrics": ["mAP", "NDS"], "reference": "a"}
    rows = [{"arm": "a", "seed": 0, "metrics": {"mAP": 0.1, "NDS": 0.2},
             "teacher": {"mAP": 0.5, "NDS": 0.6, "weights_sha": None}},
            {"arm": "a", "seed": 1, "metrics": {"mAP": 0.3, "NDS": 0.4},
             "teacher": {"mAP": 0.52, "NDS": 0.61, "weights_sha": "00ff00ff00ff00ff"}}]
    table = exp.summarize(rows, spec["metrics"], "a")
    text = exp.format_markdown(spec, table, rows=rows)
    assert "The runs started from 2 trainings of the teacher" in text
    assert "- mAP 0.5000, NDS 0.6000 (weights not recorded): a 0" in text
    assert "- mAP 0.5200, NDS 0.6100 (weights 00ff00ff00ff00ff): a 1" in text
    assert "trainings of the teacher" not in exp.format_markdown(spec, table, rows=rows[:1])


def test_rows_without_a_digest_join_the_teacher_with_equal_metrics():
    from mmdet3d.apis import experiment as exp

    spec = {"name": "toy", "metrics": ["mAP", "NDS"], "reference": "a"}
    old = {"mAP": 0.5, "NDS": 0.6, "weights_sha": None}
    rows = [{"arm": "a", "seed": 0, "metrics": {"mAP": 0.1, "NDS": 0.2}, "teacher": dict(old)},
            {"arm": "b", "seed": 0, "metrics": {"mAP": 0.2, "NDS": 0.3}, "teacher": dict(old)},
            {"arm": "a", "seed": 1, "metrics": {"mAP": 0.3, "NDS": 0.4},
             "teacher": dict(old, weights_sha="00ff00ff00ff00ff")}]
    table = exp.summarize(rows, spec["metrics"], "a")
    text = exp.format_markdown(spec, table, rows=rows)
    assert "trainings of the teacher" not in text
    assert "All runs started from one teacher (weights 00ff00ff00ff00ff); a 0, b 0 recorded its metrics" in text

    # a digest-less row whose metrics differ in one metric stays apart
    rows[1]["teacher"]["NDS"] = 0.6000001
    text = exp.format_markdown(spec, table, rows=rows)
    assert "The runs started from 2 trainings of the teacher" in text
    assert "(weights 00ff00ff00ff00ff): a 0, a 1" in text and "(weights not recorded): b 0" in text

    # two digests with equal metrics: the digest-less row cannot be matched to either
    rows[1]["teacher"] = dict(old, weights_sha="1111222233334444")
    text = exp.format_markdown(spec, table, rows=rows)
    assert "The runs started from 3 trainings of the teacher" in text
    assert "(weights not recorded): a 0" in text


def test_recorded_rows_without_a_teacher_name_the_recorded_one(tmp_path):
    from mmdet3d.apis import experiment as exp

    results = {"teacher": {"arm": "teacher", "seed": 0, "metrics": {"mAP": 0.5}, "config_sha": "t"},
               "runs": [{"arm": "a", "seed": 0, "metrics": {"mAP": 0.1}, "config_sha": "x"},
                        {"arm": "a", "seed": 1, "metrics": {"mAP": 0.2}, "config_sha": "y",
                         "teacher": {"mAP": 0.4, "weights_sha": "ab"}}]}
    (tmp_path / "results.json").write_text(json.dumps(results))
    rows = exp.recorded_rows({"results_dir": str(tmp_path)})
    assert rows[("a", 0)]["teacher"] == {"mAP": 0.5, "weights_sha": None}
    assert rows[("a", 1)]["teacher"] == {"mAP": 0.4, "weights_sha": "ab"}
    assert "teacher" not in rows[("teacher", 0)]


def test_spec_threads_fix_every_training_and_are_recorded(tmp_path):
    spec = write_spec(tmp_path, "toy_threads", [{"name": "wide", "seeds": [0]}], threads=1)
    run_experiment(spec, "--workers", "2")
    with open(tmp_path / "toy_threads" / "results.json") as f:
        results = json.load(f)
    assert results["runs"][0]["threads"] == [1] and results["teacher"]["threads"] == [1]

    bad = write_spec(tmp_path, "toy_bad_threads", [{"name": "wide", "seeds": [0]}], teacher=False, threads=0)
    result = run_experiment(bad, check=False)
    err = result.stderr.strip()
    assert result.returncode == 2 and "\n" not in err and "'threads' must be an integer >= 1" in err


def test_unreadable_results_file_is_one_line_error(tmp_path):
    spec = write_spec(tmp_path, "toy_bad_results", [{"name": "wide", "seeds": [0]}], teacher=False)
    (tmp_path / "toy_bad_results").mkdir()
    (tmp_path / "toy_bad_results" / "results.json").write_text('{"runs": [')
    result = run_experiment(spec, check=False)
    err = result.stderr.strip()
    assert result.returncode == 2 and "\n" not in err and "results.json" in err and "not valid JSON" in err


def test_bad_spec_is_one_line_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"arms": [{"name": "a", "config": "x.yaml", "seeds": [0, 0]}]}))
    result = run_experiment(str(path), check=False)
    err = result.stderr.strip()
    assert result.returncode == 2 and "\n" not in err and str(path) in err and "seeds" in err


@pytest.mark.parametrize("name,seeds", [("simdistill_synthetic.yaml", {"baseline": 3, "simdistill": 3}),
                                        ("simdistill_synthetic_quick.yaml", {"baseline": 1, "simdistill": 1})])
def test_shipped_specs_resolve_every_arm(name, seeds):
    from mmdet3d.apis import experiment as exp

    spec = exp.load_spec(os.path.join(REPO, "configs", "experiments", name))
    names = [arm["name"] for arm in spec["arms"]]
    assert names[:8] == ["baseline", "simdistill", "no_imd", "no_cmd", "no_mmd_f", "no_mmd_p", "no_gcm",
                         "paper_weights"]
    assert spec["reference"] == "baseline" and spec["teacher"]["config"]
    runs = {(r.arm, r.seed): r.resolved() for r in exp.grid(spec)}
    for arm, count in seeds.items():
        assert sorted(s for a, s in runs if a == arm) == list(range(count))
    switches = {"no_imd": "img_feature", "no_cmd": "plidar_feature", "no_mmd_f": "fusion_feature",
                "no_mmd_p": "prediction_distill", "no_gcm": "bev_DeformAttn"}
    for (arm, seed), cfg in runs.items():
        assert cfg.model.teacher_checkpoint == os.path.join(spec["out_dir"], "teacher", "latest.pth")
        assert cfg.data.val.ann_file.startswith(spec["dataset"]["root"])
        assert cfg.evaluation.interval == cfg.max_epochs and cfg.seed == seed
        if arm in switches:
            off = [k for k in switches.values() if not cfg.model.encoders[k]]
            assert off == [switches[arm]], (arm, off)
        elif arm == "simdistill":
            assert all(cfg.model.encoders[k] for k in switches.values())
    assert runs[("paper_weights", 0)].model.distill_weights.kd_cls == 0.25
    assert runs[("simdistill", 0)].model.distill_weights.kd_cls == 25.0
    if "balanced_at_init" in names:
        assert runs[("balanced_at_init", 0)].model.distill_weights.img_feature == 2800.0


def test_bevformer_spec_shares_the_teacher_of_the_main_spec():
    from mmdet3d.apis import experiment as exp

    main, bevformer = (exp.load_spec(os.path.join(REPO, "configs", "experiments", f"{name}_synthetic.yaml"))
                       for name in ("simdistill", "bevformer"))
    assert exp.teacher_run(main).config_sha() == exp.teacher_run(bevformer).config_sha()
    assert exp.teacher_run(main).run_dir == exp.teacher_run(bevformer).run_dir
    runs = {r.arm: r.resolved() for r in exp.grid(bevformer)}
    assert runs["bevformer_simdistill"].model.encoders_student.camera.vtransform.type == "BEVFormerEncoder"
    assert runs["bevformer_simdistill"].model.encoders.img_feature
    assert not runs["bevformer_baseline"].model.encoders.img_feature
    main_dirs = {r.run_dir for r in exp.grid(main)}
    assert not main_dirs & {r.run_dir for r in exp.grid(bevformer)}
