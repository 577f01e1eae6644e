"""Experiment specs (arms x seeds), the state of each run on disk, and the aggregation of their metrics.

A spec is a YAML file (``configs/experiments/*.yaml``)::

    name: simdistill_synthetic
    out_dir: runs/experiments/simdistill_synthetic   # default runs/experiments/<spec stem>
    results_dir: docs/results/simdistill_synthetic   # results.json / results.md (default: out_dir)
    dataset:                                         # optional
      root: data/experiments/syn40
      generator: {scenes: 40, version: v1.0-trainval}   # tools/create_synthetic_nuscenes.py options, if root is empty
      version: v1.0-trainval
      train_split: synthetic_train
      val_split: synthetic_val
    pretrain:                                        # optional: tools/pretrain_backbone.py, if `out` is absent
      {config: configs/synthetic/det/camera_lss.yaml, out: data/pretrained/x.pth, args: {iters: 600}}
    overrides: {max_epochs: 5}                       # for every training, the teacher's included
    teacher:                                         # either a checkpoint, or a config trained once
      {config: ..., overrides: {}, seed: 0}          # or {checkpoint: PATH}
    teacher_key: model.teacher_checkpoint            # config key that receives the teacher's checkpoint
    threads: 1                                       # OMP threads of every step (default: cpus // workers for
                                                     # trainings); results are bit-reproducible only at a fixed count
    metrics: [mAP, NDS, mATE, mASE, mAOE]
    reference: baseline                              # arm the relative changes are against
    arms:
      - {name: baseline, config: ..., seeds: [0, 1, 2], overrides: {}}

Every training is ``tools/train.py CONFIG --run-dir OUT_DIR/<arm>/seed_<S> --seed S --resume`` plus the overrides,
scored once, at its last epoch, on the validation split. A run is done when its ``experiment.json`` says so for
the same resolved config (``config_sha``); a run whose config changed since it started is refused, not reused.
A run with no folder whose row is in ``results_dir/results.json`` with the same ``config_sha`` is *recorded*:
finished in another checkout (run folders hold checkpoints and stay out of git; ``results_dir`` is committed), so
its row is kept and it is not trained again.
"""
import hashlib
import json
import math
import os

import yaml

from mmdet3d.utils.checkpoint import atomic_write_bytes, weights_sha
from mmdet3d.utils.config import load_config

DEFAULT_METRICS = ("mAP", "NDS", "mATE", "mASE", "mAOE")
STATE_FILE = "experiment.json"
RESULTS_FILE = "results.json"
TOP_KEYS = {"name", "out_dir", "results_dir", "dataset", "pretrain", "overrides", "teacher", "teacher_key",
            "metrics", "reference", "arms", "threads"}
ARM_KEYS = {"name", "config", "seeds", "overrides"}


class SpecError(ValueError):
    """A spec that cannot be run; the message names the file and the key."""


def _require(condition, path, message):
    if not condition:
        raise SpecError(f"{path}: {message}")


def _check_overrides(value, path, key):
    _require(value is None or isinstance(value, dict), path, f"'{key}' must be a mapping of config keys to values")
    return dict(value or {})


def load_spec(path):
    """The spec at ``path`` with defaults filled in; a ``SpecError`` naming the key for anything malformed."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"experiment spec not found: {path}")
    with open(path) as f:
        try:
            spec = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise SpecError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    _require(isinstance(spec, dict), path, "must be a mapping")
    unknown = sorted(set(spec) - TOP_KEYS)
    _require(not unknown, path, f"unknown key(s) {unknown} (known: {sorted(TOP_KEYS)})")
    stem = os.path.splitext(os.path.basename(path))[0]
    spec.setdefault("name", stem)
    spec.setdefault("out_dir", os.path.join("runs", "experiments", stem))
    spec.setdefault("results_dir", spec["out_dir"])
    spec["overrides"] = _check_overrides(spec.get("overrides"), path, "overrides")
    spec.setdefault("teacher_key", "model.teacher_checkpoint")
    spec["metrics"] = list(spec.get("metrics") or DEFAULT_METRICS)
    threads = spec.setdefault("threads", None)
    _require(threads is None or (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1), path,
             f"'threads' must be an integer >= 1, got {threads!r}")

    dataset = spec.get("dataset")
    if dataset is not None:
        _require(isinstance(dataset, dict) and dataset.get("root"), path, "'dataset' needs a 'root'")
        _require(isinstance(dataset.get("generator", {}), dict), path, "'dataset.generator' must be a mapping")
    pretrain = spec.get("pretrain")
    if pretrain is not None:
        _require(isinstance(pretrain, dict) and pretrain.get("config") and pretrain.get("out"), path,
                 "'pretrain' needs 'config' and 'out'")
    teacher = spec.get("teacher")
    if teacher is not None:
        _require(isinstance(teacher, dict) and (bool(teacher.get("config")) != bool(teacher.get("checkpoint"))),
                 path, "'teacher' needs exactly one of 'config' (trained once) and 'checkpoint'")
        teacher["overrides"] = _check_overrides(teacher.get("overrides"), path, "teacher.overrides")
        teacher.setdefault("seed", 0)

    arms = spec.get("arms")
    _require(isinstance(arms, list) and arms, path, "'arms' must be a non-empty list")
    names = set()
    for i, arm in enumerate(arms):
        where = f"arms[{i}]"
        _require(isinstance(arm, dict) and arm.get("name") and arm.get("config"), path,
                 f"{where} needs 'name' and 'config'")
        unknown = sorted(set(arm) - ARM_KEYS)
        _require(not unknown, path, f"{where} ({arm['name']}): unknown key(s) {unknown}")
        _require(arm["name"] not in names and arm["name"] != "teacher", path,
                 f"{where}: arm name '{arm['name']}' is used twice or reserved")
        names.add(arm["name"])
        seeds = arm.get("seeds", [0])
        _require(isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds)
                 and len(set(seeds)) == len(seeds), path, f"{where} ({arm['name']}): 'seeds' must be distinct integers")
        arm["seeds"] = seeds
        arm["overrides"] = _check_overrides(arm.get("overrides"), path, f"{where}.overrides")
    reference = spec.setdefault("reference", arms[0]["name"])
    _require(reference in names, path, f"'reference' names no arm: {reference}")
    return spec


def override_tokens(overrides):
    """``{"a.b": value}`` -> ``["--a.b", text]``; non-strings as JSON, which the config loader reads as YAML."""
    tokens = []
    for key, value in overrides.items():
        tokens += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return tokens


def data_overrides(spec):
    dataset = spec.get("dataset")
    if not dataset:
        return {}
    out = {"dataset_root": dataset["root"]}
    for key in ("version", "train_split", "val_split"):
        if key in dataset:
            out[key] = dataset[key]
    return out


class Run:
    """One training of the grid: its config, the CLI overrides that make it, and its folder."""

    def __init__(self, arm, seed, config, overrides, run_dir):
        self.arm, self.seed, self.config, self.run_dir = arm, seed, config, run_dir
        self.overrides = dict(overrides, seed=seed)
        self._resolved = None

    @property
    def label(self):
        return self.arm if self.arm == "teacher" else f"{self.arm} seed {self.seed}"

    def resolved(self):
        if self._resolved is None:
            self._resolved = load_config(self.config, override_tokens(self.overrides))
        return self._resolved

    def max_epochs(self):
        return int(self.resolved()["max_epochs"])

    def config_sha(self):
        tree = self.resolved().to_dict()
        return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def command(self, python, tools_dir):
        return [python, os.path.join(tools_dir, "train.py"), self.config, "--run-dir", self.run_dir, "--resume",
                *override_tokens(self.overrides)]

    def metrics_file(self):
        return os.path.join(self.run_dir, f"metrics_epoch_{self.max_epochs()}.json")

    def checkpoint(self):
        return os.path.join(self.run_dir, "latest.pth")


def teacher_run(spec):
    teacher = spec.get("teacher")
    if not teacher or not teacher.get("config"):
        return None
    overrides = {**spec["overrides"], **data_overrides(spec), **teacher["overrides"]}
    run = Run("teacher", teacher["seed"], teacher["config"], overrides, os.path.join(spec["out_dir"], "teacher"))
    _score_at_the_end(run)
    return run


def teacher_identity(spec, teacher_metrics=None):
    """What the runs of ``spec`` start from: the teacher checkpoint's ``weights_sha`` and, when the spec trains it,
    its metrics; ``None`` without a teacher checkpoint. Recorded in every run, since retraining the teacher (a fresh
    checkout at another thread count, other hardware) need not give the same weights."""
    checkpoint = teacher_checkpoint(spec)
    if not checkpoint or not os.path.isfile(checkpoint):
        return None
    return dict(teacher_metrics or {}, weights_sha=weights_sha(checkpoint))


def teacher_checkpoint(spec):
    teacher = spec.get("teacher")
    if not teacher:
        return None
    return teacher["checkpoint"] if teacher.get("checkpoint") else os.path.join(spec["out_dir"], "teacher",
                                                                                  "latest.pth")


def _score_at_the_end(run):
    """Evaluate once, after the last epoch, unless the spec chose an interval."""
    if "evaluation.interval" not in run.overrides:
        run.overrides["evaluation.interval"] = run.max_epochs()
        run._resolved = None


def grid(spec):
    """The arms x seeds runs of ``spec``, in spec order (seeds inner)."""
    runs = []
    checkpoint = teacher_checkpoint(spec)
    for arm in spec["arms"]:
        for seed in arm["seeds"]:
            overrides = {**spec["overrides"], **data_overrides(spec)}
            if checkpoint:
                overrides[spec["teacher_key"]] = checkpoint
            overrides.update(arm["overrides"])
            run = Run(arm["name"], seed, arm["config"], overrides,
                      os.path.join(spec["out_dir"], arm["name"], f"seed_{seed}"))
            _score_at_the_end(run)
            runs.append(run)
    return runs


def read_state(run):
    path = os.path.join(run.run_dir, STATE_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_state(run, state):
    os.makedirs(run.run_dir, exist_ok=True)
    atomic_write_bytes((json.dumps(state, indent=2) + "\n").encode(), os.path.join(run.run_dir, STATE_FILE))


def recorded_rows(spec):
    """The rows of ``results_dir/results.json`` (runs and teacher) by ``(arm, seed)``; empty without the file."""
    path = os.path.join(spec["results_dir"], RESULTS_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        try:
            results = json.load(f)
        except json.JSONDecodeError as e:
            raise SpecError(f"{path}: not valid JSON ({e.msg}, line {e.lineno}); fix or delete it") from None
    teacher = results.get("teacher")
    rows = list(results.get("runs") or []) + ([teacher] if teacher else [])
    for row in rows:
        if not isinstance(row, dict) or not {"arm", "seed", "metrics", "config_sha"} <= set(row):
            raise SpecError(f"{path}: a row without 'arm', 'seed', 'metrics' and 'config_sha': {str(row)[:80]}")
    for row in rows[:len(rows) - bool(teacher)]:
        if "teacher" not in row and teacher:  # rows written before runs named their teacher came from this one
            row["teacher"] = dict(teacher["metrics"], weights_sha=None)
    return {(row["arm"], row["seed"]): row for row in rows}


def recorded_row(run, recorded):
    """The recorded row of ``run`` when it was made with the run's current config, else ``None``."""
    row = (recorded or {}).get((run.arm, run.seed))
    return row if row is not None and row["config_sha"] == run.config_sha() else None


def status(run, recorded=None):
    """``"done"``, ``"partial"`` (a checkpoint to resume from), ``"recorded"`` (no folder, but a row of
    ``recorded_rows`` with the same config), ``"new"`` or ``"stale"`` (another config ran here)."""
    state = read_state(run)
    if state is not None and state.get("config_sha") != run.config_sha():
        return "stale"
    if state is not None and state.get("done") and os.path.isfile(run.metrics_file()):
        return "done"
    if os.path.isfile(run.checkpoint()):
        return "partial"
    return "recorded" if state is None and recorded_row(run, recorded) else "new"


def metric_value(metrics, name):
    """``name`` in a metrics file, also under a prefix (``object/mAP``); ``None`` when absent."""
    if name in metrics:
        return metrics[name]
    found = [v for k, v in metrics.items() if k.endswith("/" + name)]
    return found[0] if len(found) == 1 else None


def mean_std(values):
    """Mean and sample standard deviation (n - 1); the deviation of a single value is ``None``."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return mean, std


def summarize(results, metrics, reference):
    """Per arm (in order of appearance): seeds, per-seed values, mean, std, and the relative change of the mean
    against the reference arm's mean (``(arm - ref) / |ref|``) for every metric."""
    arms = {}
    for row in results:
        arms.setdefault(row["arm"], []).append(row)
    table = {}
    for arm, rows in arms.items():
        rows = sorted(rows, key=lambda r: r["seed"])
        entry = {"seeds": [r["seed"] for r in rows], "metrics": {}, "wall_s": [r.get("wall_s") for r in rows]}
        for name in metrics:
            values = [r["metrics"].get(name) for r in rows]
            values = [v for v in values if v is not None]
            if values:
                mean, std = mean_std(values)
                entry["metrics"][name] = {"values": values, "mean": mean, "std": std}
        table[arm] = entry
    ref = table.get(reference, {}).get("metrics", {})
    for arm, entry in table.items():
        for name, stats in entry["metrics"].items():
            base = ref.get(name, {}).get("mean")
            stats["relative"] = (stats["mean"] - base) / abs(base) if base else None
    return table


def teachers_note(rows, metrics):
    """Lines naming the teachers the runs came from: one line per teacher when there were several; one line when
    some runs predate the recorded weights digest and are matched to the digest's teacher by equal metrics."""
    digests = {}
    for row in rows:
        identity = row.get("teacher") or {}
        if identity.get("weights_sha"):
            digests.setdefault(_teacher_scores(identity, metrics), set()).add(identity["weights_sha"])
    groups, matched = {}, []
    for row in rows:
        identity = row.get("teacher") or {}
        scores, sha = _teacher_scores(identity, metrics), identity.get("weights_sha")
        label = f"{row['arm']} {row['seed']}"
        if sha is None and len(digests.get(scores, ())) == 1:
            # Metrics equal in every recorded digit to a named teacher's: the same training, digest not yet kept.
            sha = next(iter(digests[scores]))
            matched.append(label)
        groups.setdefault((scores, sha), (identity, sha, []))[2].append(label)
    if len(groups) < 2:
        if not matched:
            return []
        sha = next(iter(groups.values()))[1]
        return ["", f"All runs started from one teacher (weights {sha}); {', '.join(matched)} recorded its metrics "
                "but not its digest (the metrics are equal in every recorded digit)."]
    lines = ["", f"The runs started from {len(groups)} trainings of the teacher (same config; a retraining at "
             "another thread count or on other hardware can reach other weights):"]
    for identity, sha, labels in groups.values():
        scores = ", ".join(f"{m} {identity[m]:.4f}" for m in metrics[:2] if identity.get(m) is not None)
        lines.append(f"- {scores or 'unscored'} ({f'weights {sha}' if sha else 'weights not recorded'}): "
                     f"{', '.join(labels)}")
    return lines


def _teacher_scores(identity, metrics):
    return tuple(identity.get(m) for m in metrics)


def format_markdown(spec, table, teacher=None, failed=(), unfinished=(), rows=()):
    metrics = spec["metrics"]
    lines = [f"# {spec['name']}", "",
             f"Per arm: mean ± std over seeds (sample std), then the per-seed values; relative change of the mean "
             f"against `{spec['reference']}`.", ""]
    if teacher:
        values = "  ".join(f"{m} {teacher['metrics'][m]:.4f}" for m in metrics if teacher["metrics"].get(m) is not None)
        lines += [f"Teacher: {values}", ""]
    lines += ["| arm | seeds | " + " | ".join(metrics) + " | " + " | ".join(f"Δ{m}" for m in metrics[:2])
              + " | wall per run (min) |", "|---|---|" + "---|" * (len(metrics) + 3)]
    for arm, entry in table.items():
        cells = []
        for name in metrics:
            stats = entry["metrics"].get(name)
            if stats is None:
                cells.append("–")
                continue
            spread = f" ± {stats['std']:.4f}" if stats["std"] is not None else ""
            cells.append(f"{stats['mean']:.4f}{spread} ({', '.join(f'{v:.4f}' for v in stats['values'])})")
        for name in metrics[:2]:
            rel = entry["metrics"].get(name, {}).get("relative")
            cells.append("ref." if arm == spec["reference"] else ("–" if rel is None else f"{100 * rel:+.1f} %"))
        walls = [w for w in entry.get("wall_s", []) if w is not None]
        cells.append(", ".join(f"{w / 60:.0f}" for w in walls) or "–")
        lines.append(f"| {arm} | {', '.join(map(str, entry['seeds']))} | " + " | ".join(cells) + " |")
    lines += teachers_note(rows, metrics)
    if failed:
        lines += ["", "Failed (not in the table): " + ", ".join(failed)]
    if unfinished:
        lines += ["", "Not finished yet (not in the table): " + ", ".join(unfinished)]
    return "\n".join(lines) + "\n"
