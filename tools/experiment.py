"""Runs an experiment spec: the dataset, the teacher, then arms x seeds of trainings; resumable and parallel.

    python tools/experiment.py SPEC.yaml [--workers K] [--dry-run | --summarize]

Builds what is missing and nothing else: the generated dataset (``dataset.generator``) when its root has no info
files, the pretrained camera backbone (``pretrain``) when its file is absent, the teacher (``teacher.config``, trained
once) and every run of the grid. A run that was killed continues from its ``latest.pth``; a finished one is skipped;
each is scored by the config's evaluator (the nuscenes-devkit) on the validation split after its last epoch.
``--workers K`` trains K runs at once, each with ``cpus // K`` threads or the spec's ``threads`` (on a GPU they
share the device); each attempt records its thread count, since CPU results are bit-reproducible only at a fixed one. A run that
fails is reported with the last lines of its log (``<run dir>/experiment.log``) and the others go on.

Writes ``results.json`` (``{"spec", "teacher", "runs": [{"arm", "seed", "metrics", "wall_s", "config_sha", "teacher"}],
"summary", "failed", "unfinished"}``) and ``results.md`` (per arm mean ± std and per-seed values, relative change
against ``reference``, wall time per run) into the spec's ``results_dir`` after every finished run, so they are
current also when the runner is stopped or some runs failed; ``--summarize`` rewrites them from the finished runs
without training. A run whose folder is gone (a fresh checkout) but whose row that ``results.json`` holds for the
same config is kept from there, not retrained; the teacher is retrained only when a run still needs its checkpoint.
``wall_s`` adds up the training attempts the runner saw end (an attempt cut off by killing the runner itself is not
counted). See ``mmdet3d/apis/experiment.py`` for the spec's keys.
"""
import argparse
import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

from tqdm import tqdm

from mmdet3d.apis import experiment as exp
from mmdet3d.apis.errors import INPUT_ERRORS, one_line
from mmdet3d.utils.checkpoint import atomic_write_bytes

TOOLS = os.path.dirname(os.path.abspath(__file__))
LOG_FILE = "experiment.log"
TAIL_LINES = 8
POLL_S = 0.5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("spec", help="experiment spec (configs/experiments/*.yaml)")
    parser.add_argument("--workers", type=int, default=1, help="trainings at once (default 1)")
    parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                        help="print what would run, with each run's state, and stop")
    parser.add_argument("--summarize", action="store_true",
                        help="write results.json / results.md from the runs finished so far, train nothing")
    return parser.parse_args(argv)


def die_with_parent():
    """Children get SIGKILL when the runner dies, so a rerun never trains beside an orphan in the same folder."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def log_tail(path, lines=TAIL_LINES):
    if not os.path.isfile(path):
        return "(no log)"
    with open(path, errors="replace") as f:
        text = f.read().replace("\r", "\n")
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join("    " + line[:200] for line in kept[-lines:])


def run_step(command, log_path, label, threads=None):
    """A preparation step (dataset, pretraining) in the foreground, with ``threads`` OMP threads when given; its
    output goes to ``log_path``."""
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    tqdm.write(f"{label}: {' '.join(command)}")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    with open(log_path, "w") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent)
    if code != 0:
        raise RuntimeError(f"{label} failed (exit {code}); last lines of {log_path}:\n{log_tail(log_path)}")


def prepare_dataset(spec, dry_run):
    dataset = spec.get("dataset")
    if not dataset or not dataset.get("generator"):
        return
    root = dataset["root"]
    if os.path.isfile(os.path.join(root, "nuscenes_infos_train.pkl")):
        return
    version = dataset.get("version", dataset["generator"].get("version", "v1.0-trainval"))
    generate = [sys.executable, os.path.join(TOOLS, "create_synthetic_nuscenes.py"), "--out-dir", root,
                *exp.override_tokens({k.replace("_", "-"): v for k, v in dataset["generator"].items()})]
    if "version" not in dataset["generator"]:
        generate += ["--version", version]
    infos = [sys.executable, os.path.join(TOOLS, "create_data.py"), "nuscenes", "--root-path", root,
             "--version", version]
    if dry_run:
        print(f"dataset {root}: to generate\n  {' '.join(generate)}\n  {' '.join(infos)}")
        return
    log = os.path.join(spec["out_dir"], "dataset.log")
    run_step(generate, log, "generating the dataset")
    run_step(infos, log + ".infos", "writing its info files")


def prepare_pretrained(spec, dry_run):
    pretrain = spec.get("pretrain")
    if not pretrain or os.path.isfile(pretrain["out"]):
        return
    command = [sys.executable, os.path.join(TOOLS, "pretrain_backbone.py"), pretrain["config"], "--out",
               pretrain["out"], *exp.override_tokens({k.replace("_", "-"): v
                                                      for k, v in (pretrain.get("args") or {}).items()})]
    if dry_run:
        print(f"pretrained backbone {pretrain['out']}: to train\n  {' '.join(command)}")
        return
    run_step(command, os.path.join(spec["out_dir"], "pretrain.log"), "pretraining the camera backbone",
             spec["threads"])


class Scheduler:
    """Launches runs as ``tools/train.py`` processes, at most ``workers`` at once, and records each attempt."""

    def __init__(self, workers, bar, on_finish=None, threads=None):
        self.workers, self.bar, self.on_finish = workers, bar, on_finish
        self.teacher = None  # the teacher identity each run records at its first launch
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self.active = {}
        self.finished, self.failed = [], []

    def launch(self, run):
        sha = run.config_sha()
        state = exp.read_state(run) or {"config_sha": sha, "attempts": [], "done": False}
        if self.teacher is not None and run.arm != "teacher":
            state.setdefault("teacher", self.teacher)
        exp.write_state(run, state)
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        log = open(os.path.join(run.run_dir, LOG_FILE), "a")
        process = subprocess.Popen(run.command(sys.executable, TOOLS), stdout=log, stderr=subprocess.STDOUT,
                                   env=env, preexec_fn=die_with_parent)
        self.active[process] = (run, state, log, time.time())

    def poll(self):
        for process in [p for p in self.active if p.poll() is not None]:
            run, state, log, start = self.active.pop(process)
            log.close()
            wall = time.time() - start
            state["attempts"].append({"wall_s": round(wall, 1), "returncode": process.returncode,
                                      "threads": self.threads})
            ok = process.returncode == 0 and os.path.isfile(run.metrics_file())
            if ok:
                state["done"] = True
                state["wall_s"] = round(sum(a["wall_s"] for a in state["attempts"]), 1)
            exp.write_state(run, state)
            self.report(run, state, ok, process.returncode)
            if self.on_finish:
                self.on_finish()

    def report(self, run, state, ok, code):
        self.bar.update(1)
        if ok:
            values = collect(run)["metrics"]
            shown = "  ".join(f"{k} {v:.4f}" for k, v in list(values.items())[:2])
            tqdm.write(f"done    {run.label}: {shown}  ({state['wall_s'] / 60:.1f} min)")
            self.finished.append(run)
        else:
            reason = f"exit {code}" if code else f"no {os.path.basename(run.metrics_file())} written"
            tqdm.write(f"FAILED  {run.label} ({reason}); last lines of {os.path.join(run.run_dir, LOG_FILE)}:\n"
                       f"{log_tail(os.path.join(run.run_dir, LOG_FILE))}")
            self.failed.append(run)

    def run_all(self, runs):
        pending = list(runs)
        while pending or self.active:
            while pending and len(self.active) < self.workers:
                self.launch(pending.pop(0))
            time.sleep(POLL_S)
            self.poll()

    def stop(self):
        for process in self.active:
            process.send_signal(signal.SIGTERM)
        for process in self.active:
            process.wait()


def collect(run, metrics_names=None):
    with open(run.metrics_file()) as f:
        metrics = json.load(f)
    names = metrics_names or [k.split("/")[-1] for k in metrics]
    values = {name: exp.metric_value(metrics, name) for name in names}
    state = exp.read_state(run) or {}
    row = {"arm": run.arm, "seed": run.seed, "metrics": {k: v for k, v in values.items() if v is not None},
           "wall_s": state.get("wall_s"), "config_sha": run.config_sha(), "run_dir": run.run_dir}
    if "teacher" in state:
        row["teacher"] = state["teacher"]
    threads = sorted({a["threads"] for a in state.get("attempts", []) if "threads" in a})
    if threads:
        row["threads"] = threads
    return row


def finished_row(run, metrics, recorded):
    """The run's row from its folder when it finished here, from ``recorded`` when it finished elsewhere."""
    state = exp.status(run, recorded)
    if state == "done":
        return collect(run, metrics)
    return exp.recorded_row(run, recorded) if state == "recorded" else None


def write_results(spec, runs, teacher, failed, recorded):
    """The finished runs' results; runs that failed or are not finished yet are listed by name."""
    finished = {r: finished_row(r, spec["metrics"], recorded) for r in runs}
    done = [r for r in runs if finished[r] is not None]
    rows = [finished[r] for r in done]
    teacher_row = finished_row(teacher, spec["metrics"], recorded) if teacher else None
    table = exp.summarize(rows, spec["metrics"], spec["reference"])
    failed_labels = [r.label for r in failed]
    unfinished = [r.label for r in runs if r not in done and r.label not in failed_labels]
    result = {"spec": spec, "teacher": teacher_row, "runs": rows, "summary": table, "failed": failed_labels,
              "unfinished": unfinished}
    os.makedirs(spec["results_dir"], exist_ok=True)
    json_path = os.path.join(spec["results_dir"], "results.json")
    md_path = os.path.join(spec["results_dir"], "results.md")
    atomic_write_bytes((json.dumps(result, indent=2) + "\n").encode(), json_path)
    atomic_write_bytes(exp.format_markdown(spec, table, teacher_row, failed_labels, unfinished, rows).encode(),
                       md_path)
    return json_path, md_path


def teacher_needed(teacher, runs, recorded):
    """The teacher trains when it has not, or when its checkpoint is gone and a run still has to train from it."""
    state = exp.status(teacher, recorded)
    if state == "done":
        return False
    return state != "recorded" or any(exp.status(r, recorded) not in ("done", "recorded") for r in runs)


def warn_if_teacher_changed(teacher, metrics, recorded):
    """Runs kept from the record were distilled from the recorded teacher; say so when the retrained one differs."""
    before = exp.recorded_row(teacher, recorded)
    if before is None:
        return
    now = collect(teacher, metrics)["metrics"]
    changed = [f"{k} {before['metrics'][k]:.4f} -> {v:.4f}" for k, v in now.items()
               if k in before["metrics"] and abs(before["metrics"][k] - v) > 1e-9]
    if changed:
        tqdm.write("warning: the retrained teacher scores differently from the recorded one (" + ", ".join(changed)
                   + "): the runs kept from the record were distilled from the earlier teacher")


def dry_run(spec, teacher, runs, recorded):
    checkpoint = exp.teacher_checkpoint(spec)
    if teacher is None and checkpoint:
        print(f"teacher: given checkpoint {checkpoint}" + ("" if os.path.isfile(checkpoint) else " (MISSING)"))
    for run in ([teacher] if teacher else []) + runs:
        state = exp.status(run, recorded)
        if run is teacher and state == "recorded" and teacher_needed(teacher, runs, recorded):
            state = "retrain"
        print(f"{state:8s} {run.label}: {' '.join(run.command('python', 'tools'))}")


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        spec = exp.load_spec(args.spec)
        teacher = exp.teacher_run(spec)
        runs = exp.grid(spec)
        recorded = exp.recorded_rows(spec)
        if args.summarize:
            json_path, md_path = write_results(spec, runs, teacher, [], recorded)
            print(f"results of the finished runs: {json_path}, {md_path}")
            return 0
        if args.dry_run:
            prepare_dataset(spec, True)
            prepare_pretrained(spec, True)
            dry_run(spec, teacher, runs, recorded)
            return 0
        os.makedirs(spec["out_dir"], exist_ok=True)
        lock = open(os.path.join(spec["out_dir"], ".lock"), "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{spec['out_dir']}: another tools/experiment.py is running this spec") from None
        stale = [r for r in ([teacher] if teacher else []) + runs if exp.status(r) == "stale"]
        if stale:
            raise ValueError(f"{stale[0].run_dir}: ran with another config than the spec now gives (config_sha in "
                             f"{exp.STATE_FILE}); delete the folder to rerun it")
        checkpoint = exp.teacher_checkpoint(spec)
        if teacher is None and checkpoint and not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"teacher.checkpoint not found: {checkpoint}")
    except INPUT_ERRORS as e:
        print(f"experiment.py: error: {one_line(e)}", file=sys.stderr)
        return 2

    todo = [r for r in runs if exp.status(r, recorded) not in ("done", "recorded")]
    if teacher and teacher_needed(teacher, runs, recorded):
        todo.insert(0, teacher)
    kept = sum(exp.status(r, recorded) == "recorded" for r in ([teacher] if teacher else []) + runs if r not in todo)
    print(f"{spec['name']}: {len(runs)} runs of {len(spec['arms'])} arms"
          + (", teacher" if teacher else "") + f"; {len(todo)} to train, {args.workers} at a time"
          + (f"; {kept} kept from {os.path.join(spec['results_dir'], exp.RESULTS_FILE)}" if kept else ""))
    bar = tqdm(total=len(runs) + (1 if teacher else 0), initial=len(runs) + bool(teacher) - len(todo),
               unit="run", desc="experiment")
    # Results are rewritten after every finished run, so a runner stopped midway leaves them current.
    scheduler = Scheduler(args.workers, bar, threads=spec["threads"],
                          on_finish=lambda: write_results(spec, runs, teacher, scheduler.failed, recorded))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        prepare_dataset(spec, False)
        prepare_pretrained(spec, False)
        if teacher in todo:
            # Every arm needs the teacher's checkpoint: it trains alone, with all threads unless the spec fixes them.
            teacher_scheduler = Scheduler(1, bar, threads=spec["threads"])
            teacher_scheduler.run_all([teacher])
            if teacher_scheduler.failed:
                raise RuntimeError("the teacher failed; no arm can run without it")
            warn_if_teacher_changed(teacher, spec["metrics"], recorded)
        done = teacher is not None and exp.status(teacher) == "done"
        teacher_metrics = collect(teacher, spec["metrics"])["metrics"] if done else None
        scheduler.teacher = exp.teacher_identity(spec, teacher_metrics)
        scheduler.run_all([r for r in todo if r is not teacher])
    except RuntimeError as e:
        scheduler.stop()
        bar.close()
        print(f"experiment.py: error: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit):
        scheduler.stop()
        bar.close()
        print("experiment.py: stopped; rerun the same command to resume", file=sys.stderr)
        return 130
    bar.close()
    json_path, md_path = write_results(spec, runs, teacher, scheduler.failed, recorded)
    print(f"results: {json_path}, {md_path}" + (f"; {len(scheduler.failed)} run(s) failed" if scheduler.failed
                                                 else ""))
    return 1 if scheduler.failed else 0


if __name__ == "__main__":
    sys.exit(main())
