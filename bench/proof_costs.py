"""What the proof and `check` cost next to their floor, per model size (issue 31): `make bench` runs it on the
proof sizes of bench/models.py (`make bench-proof` alone); `python bench/proof_costs.py --smoke` runs it on the committed
6-layer sample only (no exporter needed: a check that the bench works, not a figure to quote).

"bare" is the floor of any proof: one onnxruntime InferenceSession of the repaired decoder (default options) plus
one decode step, in a fresh Python. Every figure is a child process's wall time (perf_counter) and peak RSS (wait4),
median of RUNS; ratios are medians of per-round ratios, the two sides of each started in alternating order.

- repair / bare: the default (proven) repair against bare;
- validate / bare: `graphfix validate` of the repaired file against bare;
- check per model: the unrepaired file (findings: answered from the skeleton), the repaired one on a first run
  (fresh verdict cache) and a second (the verdict cache as the first left it), each a whole process; and what one
  more unchanged repaired model adds to a second run over 10 of them (the process's start paid once);
- check --target-ort 1.16 / check, on the unrepaired float32 model;
- peak RSS of the default repair against bare's;
- the growth exponent of each time in bytes (least squares of log time on log size), with two sizes or more.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import measure  # the same child-process measure as the rest of make bench

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GRAPHFIX = str(BIN / "graphfix")
RUNS = 3
MB = 1 << 20

BARE = """import sys
import onnxruntime as ort
from graphfix.proof import client_loop
client_loop._session = lambda path, shown: ort.InferenceSession(path, providers=["CPUExecutionProvider"])
import numpy as np
session = client_loop.DecoderSession(sys.argv[1])
rng = np.random.default_rng(0)
session.run(np.array([[5]], dtype=np.int64), session.encoder_inputs(rng, 1, 5))
"""


def _size(model: Path, *, on_disk: bool = False) -> int:
    """The model's bytes with its external data; `on_disk`: those allocated (a sparse data file's holes left out)."""
    files = [model, *(p for p in model.parent.iterdir() if p.name.startswith(model.name) and p != model)]
    return sum(p.stat().st_blocks * 512 if on_disk else p.stat().st_size for p in files)


def costs(label: str, model: Path, work: Path) -> dict[str, object]:
    """Every figure of one model (see the module docstring)."""
    repaired = work / "fixed" / "decoder_model_merged.onnx"
    shutil.rmtree(repaired.parent, ignore_errors=True)
    repaired.parent.mkdir(parents=True)
    subprocess.run([GRAPHFIX, "repair", "--no-validate", "--quiet", str(model), str(repaired)], check=True,
                   stdout=subprocess.DEVNULL)
    out = work / "out"
    rounds: dict[str, list[tuple[float, int]]] = {k: [] for k in ("bare", "repair", "validate")}
    for run in range(RUNS):
        sides = ["bare", "repair", "validate"]
        for side in sides[run % 3:] + sides[:run % 3]:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            argv = {"bare": [sys.executable, "-c", BARE, str(repaired)],
                    "repair": [GRAPHFIX, "repair", str(model), str(out / "fixed.onnx")],
                    "validate": [GRAPHFIX, "validate", str(repaired)]}[side]
            rounds[side].append(measure(argv))
    bare = [t for t, _ in rounds["bare"]]

    def ratio(side: str) -> float:
        return statistics.median(t / b for (t, _), b in zip(rounds[side], bare))

    checks: dict[str, list[float]] = {k: [] for k in ("unrepaired", "first", "second", "target")}
    for _ in range(RUNS):
        cache = tempfile.mkdtemp(prefix="graphfix-bench-verdicts-")
        env = {"GRAPHFIX_CACHE": cache}
        checks["unrepaired"].append(measure([GRAPHFIX, "check", "--quiet", str(model)], env, (0, 1))[0])
        checks["target"].append(measure([GRAPHFIX, "check", "--quiet", "--target-ort", "1.16", str(model)], env,
                                        (0, 1))[0])
        checks["first"].append(measure([GRAPHFIX, "check", "--quiet", str(repaired)], env)[0])
        checks["second"].append(measure([GRAPHFIX, "check", "--quiet", str(repaired)], env)[0])
        shutil.rmtree(cache, ignore_errors=True)
    median = {k: statistics.median(v) for k, v in checks.items()}
    median["per model"] = check_per_model(repaired, work)
    return {"label": label, "size": _size(model), "on_disk": _size(model, on_disk=True), "bare": statistics.median(bare),
            "repair": statistics.median(t for t, _ in rounds["repair"]), "repair/bare": ratio("repair"),
            "validate": statistics.median(t for t, _ in rounds["validate"]), "validate/bare": ratio("validate"),
            "bare_rss": max(r for _, r in rounds["bare"]), "repair_rss": max(r for _, r in rounds["repair"]),
            "check": median,
            "target/check": statistics.median(t / c for t, c in zip(checks["target"], checks["unrepaired"]))}


def check_per_model(repaired: Path, work: Path, copies: int = 10) -> float:
    """What one more unchanged repaired model adds to a second `check` run (a pre-commit hook over a repository of
    models): `check` of `copies` hard links of it (each in a folder of its own, with its data) against `check` of
    one, in alternating rounds, over (copies - 1); the process's start is paid once either way."""
    tree = work / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    paths = []
    for i in range(copies):
        (tree / f"m{i}").mkdir(parents=True)
        for source in repaired.parent.iterdir():
            os.link(source, tree / f"m{i}" / source.name)
        paths.append(str(tree / f"m{i}" / repaired.name))
    cache = tempfile.mkdtemp(prefix="graphfix-bench-verdicts-")
    env = {"GRAPHFIX_CACHE": cache}
    measure([GRAPHFIX, "check", "--quiet", *paths], env)  # the first run: whatever it remembers
    one, many = [], []
    for run in range(RUNS):
        for side in (["one", "many"] if run % 2 == 0 else ["many", "one"]):
            (one if side == "one" else many).append(
                measure([GRAPHFIX, "check", "--quiet", *(paths[:1] if side == "one" else paths)], env)[0])
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(tree, ignore_errors=True)
    return max(0.0, statistics.median(many) - statistics.median(one)) / (copies - 1)


def growth(rows: list[dict[str, object]], key: str) -> float | None:
    """Least-squares slope of log(time) on log(bytes on disk): 1 is linear in the model's size."""
    points = [(math.log(float(r["on_disk"])), math.log(float(r[key]))) for r in rows]  # type: ignore[arg-type]
    if len(points) < 2:
        return None
    mx, my = statistics.mean(p[0] for p in points), statistics.mean(p[1] for p in points)
    spread = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / spread if spread else None


def report(rows: list[dict[str, object]]) -> None:
    print(f"\nproof and check against the floor (bare = one default InferenceSession + one decode step in a fresh "
          f"Python); median of {RUNS}, ratios = median of per-round ratios\n")
    print("| model | size | bare | default repair | repair / bare | validate | validate / bare | repair RSS / bare RSS |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {float(r['size']) / MB:.1f} MB | {r['bare']:.3f} s | {r['repair']:.3f} s | "  # type: ignore[arg-type]
              f"{r['repair/bare']:.2f} | {r['validate']:.3f} s | {r['validate/bare']:.2f} | "
              f"{r['repair_rss'] / MB:.0f} / {r['bare_rss'] / MB:.0f} MB |")  # type: ignore[operator]
    print("\n| model | check unrepaired | check repaired, 1st run | 2nd run | 2nd run, per model of 10 | "
          "check --target-ort 1.16 / check |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        c = r["check"]
        print(f"| {r['label']} | {c['unrepaired'] * 1000:.0f} ms | {c['first'] * 1000:.0f} ms | "  # type: ignore[index]
              f"{c['second'] * 1000:.0f} ms | {c['per model'] * 1000:.0f} ms | "  # type: ignore[index]
              f"{r['target/check']:.2f} |")
    for key in ("bare", "repair", "validate"):
        if (slope := growth(rows, key)) is not None:
            print(f"growth exponent of {key} time in bytes on disk: {slope:.2f}")


def targets(rows: list[dict[str, object]]) -> list[tuple[str, bool]]:
    """Issue 31's targets, per model: (what, met)."""
    met = []
    for r in rows:
        label, check = r["label"], r["check"]
        repair_rss, bare_rss = float(r["repair_rss"]), float(r["bare_rss"])  # type: ignore[arg-type]
        per_model = float(check["per model"])  # type: ignore[index]
        met += [(f"{label}: default repair <= 1.5x bare ({r['repair/bare']:.2f}x)", float(r["repair/bare"]) <= 1.5),  # type: ignore[arg-type]
                (f"{label}: validate <= 1.3x bare ({r['validate/bare']:.2f}x)", float(r["validate/bare"]) <= 1.3),  # type: ignore[arg-type]
                (f"{label}: repair peak RSS <= 1.1x bare's ({repair_rss / bare_rss:.2f}x)",
                 repair_rss <= 1.1 * bare_rss),
                (f"{label}: check of an unchanged repaired model, 2nd run, <= 50 ms a model ({per_model * 1000:.0f} ms)",
                 per_model <= 0.05),
                (f"{label}: check --target-ort 1.16 <= 1.3x check ({r['target/check']:.2f}x)",
                 float(r["target/check"]) <= 1.3)]  # type: ignore[arg-type]
    return met


def main(models: dict[str, Path]) -> int:
    # graphfix's bytecode compiled first, as a pip install does (run.py says why: PYTHONDONTWRITEBYTECODE here)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "graphfix")], check=True)
    with tempfile.TemporaryDirectory(prefix="graphfix-bench-proof-") as work:
        rows = [costs(label, path, Path(work)) for label, path in models.items()]
    report(rows)
    print()
    for text, ok in targets(rows):
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in targets(rows)) else 1


def sized_models() -> dict[str, Path]:
    """bench/models.py's proof sizes, made (exported on first use) in a child: this process stays small."""
    made = subprocess.run([sys.executable, str(ROOT / "bench" / "models.py"), "--proof-sizes"], check=True,
                          stdout=subprocess.PIPE, text=True)
    return {label: Path(path) for label, path in json.loads(made.stdout.splitlines()[-1]).items()}


if __name__ == "__main__":
    if sys.argv[1:] not in ([], ["--smoke"]):
        raise SystemExit("usage: python bench/proof_costs.py [--smoke]  (--smoke: the committed 6-layer sample only)")
    sys.exit(main({"6-layer sample": ROOT / "sample_models" / "deep" / "legacy-marian-6-layers.onnx"} if sys.argv[1:]
                  else sized_models()))
