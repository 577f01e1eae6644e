"""The GPU acceptance run in one command, sized for a lent GPU's short lease (issue: GPU acceptance).

    python tools/gpu_acceptance.py OUT_DIR [--bundle .gpubundle/site.tar.xz] [--budget-s 540] [--cpu-smoke]

Steps, each in a child process with its own time limit and all within ``--budget-s`` (so that the run ends, its
report written, inside a device call's limit); a step that fails or runs out of time is recorded and the next one
still runs, a step the budget no longer covers is recorded as skipped:

1. ``bundle``: unpack the wheel bundle of ``../shared/gpu/make-wheel-bundle.sh`` (spconv, mmengine, the devkit, ...)
   into a scratch folder put on ``PYTHONPATH`` (skipped when the file does not exist);
2. ``build``: the CUDA extension for the device's architecture only (sm_90 on an H200), all cores;
3. ``parity``: every test that needs CUDA (``tests/ops/test_cuda_parity.py``, ``test_msda_triton.py``,
   ``test_dispatch.py``, ``tests/apis/test_optim.py``), counted from pytest's JUnit report;
4. ``ops``: ``tools/benchmark_ops.py`` at nuScenes size, B = 1 and 4 (lift-splat (a)-(d), voxelization, NMS,
   deformable attention PyTorch vs Triton);
5. ``data``: a small generated dataset (10 scenes x 2 frames) for the steps that need real training samples;
6. ``student``: ``tools/benchmark.py`` on the paper-size Swin-T SimDistill student (6 x 256 x 704, B = 1), fp32 and
   fp16, each with the default lift-splat pooling and with BEVFusion's outer-product path (``pooling:
   outer_product``), in this one run;
7. ``train``: one training step (``--train-step``, B = 2, fp16) of the paper-size teacher and of SimDistill.

Everything lands in two files of OUT_DIR, rewritten after every step so that a run cut short keeps what it did:
``acceptance.json`` (environment, each step's status, seconds, command and JSON results) and ``acceptance.log``
(each step's output). ``--cpu-smoke`` runs the same steps on the CPU at toy sizes (no build, the small configs of
``configs/synthetic/det/``, one iteration): it checks the script, it measures nothing.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ElementTree

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER = "configs/nuscenes/det/centerhead/lssfpn"
PAPER_STUDENT = f"{PAPER}/camera/256x704/swint/convfuser.yaml"
PAPER_TEACHER = f"{PAPER}/camera+lidar/swint/convfuser.yaml"
SMALL_STUDENT = "configs/synthetic/det/simdistill.yaml"
SMALL_TEACHER = "configs/synthetic/det/teacher.yaml"
CUDA_TESTS = ["tests/ops/test_cuda_parity.py", "tests/ops/test_msda_triton.py", "tests/ops/test_dispatch.py",
              "tests/apis/test_optim.py"]
# The generated renders are 180 x 320; 2.2x brings them to the 256 x 704 crop of a nuScenes frame.
PAPER_RESIZE = ["--augment2d.resize", "[[2.2,2.2],[2.2,2.2]]"]
LOG_TAIL = 20000


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="where acceptance.json and acceptance.log go")
    parser.add_argument("--bundle", default=os.path.join(REPO, ".gpubundle", "site.tar.xz"),
                        help="wheel bundle to unpack (default .gpubundle/site.tar.xz; skipped when absent)")
    parser.add_argument("--cpu-smoke", action="store_true", help="the same steps on the CPU at toy sizes")
    parser.add_argument("--budget-s", type=float, default=540.0,
                        help="seconds for all steps together (default 540: a 10-minute device call with margin)")
    parser.add_argument("--scratch", help="folder for the unpacked bundle, the build and the data (default: a "
                                          "new temporary folder)")
    return parser.parse_args(argv)


class Report:
    """acceptance.json and acceptance.log, rewritten after every step."""

    def __init__(self, out_dir, environment):
        self.out_dir = out_dir
        self.data = {"environment": environment, "steps": []}
        self.log = []
        self.write()

    def add(self, step):
        self.data["steps"].append(step)
        self.write()

    def write(self):
        tmp = os.path.join(self.out_dir, ".acceptance.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=2)
        os.replace(tmp, os.path.join(self.out_dir, "acceptance.json"))
        with open(os.path.join(self.out_dir, "acceptance.log"), "w") as f:
            f.write("".join(self.log))


class Runner:
    def __init__(self, report, env, budget_s=float("inf")):
        self.report, self.env = report, env
        self.deadline = time.time() + budget_s

    def run(self, name, cmd, timeout_s, json_out=None, parse=None):
        """Runs ``cmd`` (argv, from the repository root); records status, seconds, the JSON it wrote or what
        ``parse`` makes of it. Returns True when it exited 0."""
        start = time.time()
        remaining = self.deadline - start
        timeout_s = int(min(timeout_s, remaining))
        if remaining < 5:
            self.record(name, "skipped (time budget spent)", command=" ".join(cmd))
            return False
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=timeout_s)
            output, status = proc.stdout, "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        except subprocess.TimeoutExpired as e:
            output = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            status = f"timed out after {timeout_s} s"
        seconds = round(time.time() - start, 1)
        step = {"step": name, "status": status, "seconds": seconds, "command": " ".join(cmd)}
        if json_out and os.path.isfile(json_out):
            with open(json_out) as f:
                step["result"] = json.load(f)
        if parse is not None:
            step["result"] = parse()
        if status != "ok":
            step["output_tail"] = output[-2000:]
        self.report.log.append(f"\n===== {name} ({status}, {seconds} s)\n$ {' '.join(cmd)}\n{output[-LOG_TAIL:]}")
        self.report.add(step)
        print(f"   {status}, {seconds} s", flush=True)
        return status == "ok"

    def record(self, name, status, **extra):
        self.report.add({"step": name, "status": status, **extra})
        print(f"== {name}: {status}", flush=True)


def environment(cpu_smoke):
    import torch

    env = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "python": platform.python_version(),
           "torch": torch.__version__, "cuda_runtime": torch.version.cuda, "cpu_smoke": cpu_smoke,
           "cpu_cores": os.cpu_count()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(device=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gib=round(props.total_memory / 2**30, 1))
    try:
        env["nvcc"] = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip()
        env["nvcc"] = env["nvcc"].splitlines()[-1]
    except (OSError, IndexError):
        env["nvcc"] = None
    return env


def outer_product_config(config, folder):
    """A config file that is ``config`` with BEVFusion's outer-product pooling in the camera view transform, from
    which the student's two view transforms are built too (simdistill.py)."""
    path = os.path.join(folder, "outer_product_" + os.path.basename(config))
    with open(path, "w") as f:
        f.write(f"_base_: {os.path.join(REPO, config)}\ncamera_vtransform:\n  pooling: outer_product\n")
    return path


def junit_counts(path):
    """``{tests, failures, errors, skipped, failed: [names]}`` of a pytest JUnit XML report."""
    if not os.path.isfile(path):
        return None
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    counts["failed"] = [f"{case.get('classname')}::{case.get('name')}" for s in suites for case in s.iter("testcase")
                        if case.find("failure") is not None or case.find("error") is not None]
    return counts


def main(argv=None):
    args = parse_args(argv)
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        sys.exit("gpu_acceptance: no CUDA device (use --cpu-smoke to check the script on a CPU)")
    out_dir = os.path.abspath(args.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    scratch = os.path.abspath(args.scratch) if args.scratch else tempfile.mkdtemp(prefix="simdistill_gpu_")
    os.makedirs(scratch, exist_ok=True)
    work = os.path.join(scratch, "json")
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    report = Report(out_dir, environment(args.cpu_smoke))
    runner = Runner(report, env, args.budget_s)
    py = sys.executable
    device = "cpu" if args.cpu_smoke else "cuda"

    # 1. the wheel bundle
    if os.path.isfile(args.bundle):
        start = time.time()
        site = os.path.join(scratch, "site")
        with tarfile.open(args.bundle) as tar:
            tar.extractall(site, filter="data")
        env["PYTHONPATH"] = os.pathsep.join([REPO, site] + env["PYTHONPATH"].split(os.pathsep)[1:])
        runner.record("bundle", "ok", seconds=round(time.time() - start, 1), file=args.bundle)
    else:
        runner.record("bundle", f"skipped ({args.bundle} does not exist)")

    # 2. the CUDA extension, for this device only
    if args.cpu_smoke:
        runner.record("build", "skipped (--cpu-smoke)")
    else:
        major, minor = torch.cuda.get_device_capability(0)
        build_env = dict(env, FORCE_CUDA="1", TORCH_CUDA_ARCH_LIST=f"{major}.{minor}", MAX_JOBS=str(os.cpu_count()))
        runner.env = build_env
        runner.run("build", [py, "setup.py", "-q", "build_ext", "--inplace", "--build-temp",
                             os.path.join(scratch, "build")], 360)
        runner.env = env

    # 3. the tests that need CUDA
    junit = os.path.join(work, "parity.xml")
    runner.run("parity", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra", "--junitxml",
                          junit] + CUDA_TESTS, 300, parse=lambda: junit_counts(junit))

    # 4. the ops benchmark
    ops_json = os.path.join(work, "ops.json")
    ops_args = ["--device", "cpu", "--toy", "--batch-sizes", "1"] if args.cpu_smoke else ["--device", "cuda"]
    runner.run("ops", [py, "tools/benchmark_ops.py", *ops_args, "--json", ops_json], 300, json_out=ops_json)

    # 5. data for the training steps
    data = os.path.join(scratch, "data") + "/"
    if runner.run("data", [py, "tools/create_synthetic_nuscenes.py", "--out-dir", data, "--frames-per-scene", "2",
                           "--workers", str(min(8, os.cpu_count() or 1)), "--overwrite"], 240):
        runner.run("data_infos", [py, "tools/create_data.py", "nuscenes", "--root-path", data,
                                  "--version", "v1.0-mini"], 120)
    data_args = ["--dataset_root", data, "--version", "v1.0-mini"]

    # 6. student latency: default pooling against BEVFusion's outer product, fp32 and mixed precision
    student = SMALL_STUDENT if args.cpu_smoke else PAPER_STUDENT
    iters = ["--iters", "1", "--warmup", "0"] if args.cpu_smoke else ["--iters", "20", "--warmup", "5"]
    resize = [] if args.cpu_smoke else PAPER_RESIZE
    for precision in ("fp32", "bf16") if args.cpu_smoke else ("fp32", "fp16"):
        for pooling, config in (("depth", student), ("outer_product", outer_product_config(student, scratch))):
            out = os.path.join(work, f"student_{precision}_{pooling}.json")
            runner.run(f"student_{precision}_{pooling}",
                       [py, "tools/benchmark.py", config, "--device", device, "--precision", precision, *iters,
                        "--json", out, *resize], 240, json_out=out)

    # 7. one training step of the teacher and of SimDistill
    teacher = SMALL_TEACHER if args.cpu_smoke else PAPER_TEACHER
    train = (["--batch-size", "1", "--iters", "1", "--warmup", "0"] if args.cpu_smoke
             else ["--batch-size", "2", "--precision", "fp16", "--iters", "10", "--warmup", "3"])
    for name, config in (("train_teacher", teacher), ("train_simdistill", student)):
        out = os.path.join(work, f"{name}.json")
        runner.run(name, [py, "tools/benchmark.py", config, "--train-step", "--device", device, *train,
                          "--json", out, *data_args, *resize], 300, json_out=out)

    failed = [s["step"] for s in report.data["steps"] if not s["status"].startswith(("ok", "skipped"))]
    print(f"\n{out_dir}/acceptance.json: {len(report.data['steps'])} steps"
          + (f", not ok: {', '.join(failed)}" if failed else ", all ok"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
