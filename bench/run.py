"""`make bench`: what a repair costs next to copying the file, and what the repaired decoder buys at decode time.

Everything is measured in this one run, in child processes (wall time with perf_counter, peak RSS from the child's
own rusage via os.wait4), median of RUNS runs. Targets are ratios so they hold on any machine: `cp` and `repair`
run in alternating pairs, each started after a sync (so neither pays for the other's writeback), and the ratio is
the median of the pairs' ratios. graphfix's bytecode is compiled first, as a pip install does (this sandbox sets
PYTHONDONTWRITEBYTECODE, under which an editable install would recompile every module on every run).

Linux starts a child's peak RSS at its parent's peak when it execs, so this process stays small: the models are
generated in a child (models.py) and onnxruntime is imported only after the repair measurements. The floor that
remains is printed (the peak RSS of `true` started from here).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import CACHE, EXPORT, files_of

RUNS = 5
BIN = Path(sys.executable).parent
# graphfix with the Linux-only I/O hidden (no fcntl, copy_file_range, sendfile, O_NOFOLLOW, O_NONBLOCK, /proc):
# the portable paths macOS and Windows take, the copy through Python's buffered reads at offsets.
PORTABLE = Path(__file__).resolve().parents[1] / "tests" / "portable" / "hidden_linux_apis.py"
OUT = CACHE / "out"
MB = 1 << 20


def measure(argv: list[str], env: dict[str, str] | None = None, exit_codes: tuple[int, ...] = (0,)) -> tuple[float, int]:
    """Wall seconds and peak RSS bytes of one child process (with `env` added to this one's); it must exit with one
    of `exit_codes`."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in exit_codes:
        raise SystemExit(f"{' '.join(argv)} failed: {child.stderr.read().decode().strip()}")
    return elapsed, usage.ru_maxrss * 1024


def fresh_out() -> Path:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    os.sync()  # the previous run's output is on disk: its writeback is not charged to the next command
    return OUT


def median_of(make_argv, runs: int = RUNS) -> tuple[float, int]:
    times, peaks = [], []
    for _ in range(runs):
        seconds, peak = measure(make_argv(fresh_out()))
        times.append(seconds)
        peaks.append(peak)
    return statistics.median(times), max(peaks)


BASELINE = """import sys, onnx
model = onnx.load(sys.argv[1])
external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in onnx.load(sys.argv[1], load_external_data=False).graph.initializer)
onnx.save(model, sys.argv[2], save_as_external_data=external, location="fixed.onnx_data")"""


def measure_model(label: str, model: Path, baseline: bool, portable: bool) -> dict:
    """cp, repair (and the portable repair) in rotating order, RUNS rounds; ratios are medians of each round's."""
    size = sum(p.stat().st_size for p in files_of(model))
    on_disk = sum(p.stat().st_blocks * 512 for p in files_of(model))
    repair = ["repair", "--no-validate", str(model)]
    argv = {"cp": lambda out: ["cp", *map(str, files_of(model)), str(out)],
            "repair": lambda out: [str(BIN / "graphfix"), *repair, str(out / "fixed.onnx")],
            "portable": lambda out: [sys.executable, str(PORTABLE), *repair, str(out / "fixed.onnx")]}
    names = ["cp", "repair", "portable"] if portable else ["cp", "repair"]
    times: dict[str, list[float]] = {name: [] for name in names}
    peaks = []
    for run in range(RUNS):
        for name in names[run % len(names):] + names[:run % len(names)]:
            seconds, peak = measure(argv[name](fresh_out()))
            times[name].append(seconds)
            if name == "repair":
                peaks.append(peak)
    base = median_of(lambda out: [sys.executable, "-c", BASELINE, str(model), str(out / "fixed.onnx")], runs=3) \
        if baseline else None
    ratio = {name: statistics.median(r / c for r, c in zip(times[name], times["cp"])) for name in names[1:]}
    return {"label": label, "size": size, "on_disk": on_disk, "cp": statistics.median(times["cp"]),
            "repair": statistics.median(times["repair"]), "ratio": ratio["repair"], "repair_rss": max(peaks),
            "baseline": base, "portable": statistics.median(times["portable"]) if portable else None,
            "portable_ratio": ratio.get("portable")}


SPLIT = CACHE / "split"
SPLIT_FILES = ("config.json", "generation_config.json", "encoder_model.onnx", "decoder_model.onnx",
               "decoder_with_past_model.onnx")


def split_merge(runs: int = 3) -> dict:
    """A split export (the export's encoder and decoder pair, no merged decoder): `repair --no-validate DIR OUT`,
    which merges the pair (GF401), against `cp -r DIR`, in alternating rounds; and the merged decoder's size against
    the pair's (shared weights stored once)."""
    if not all((SPLIT / name).exists() for name in SPLIT_FILES):
        SPLIT.mkdir(parents=True, exist_ok=True)
        for name in SPLIT_FILES:
            shutil.copyfile(EXPORT / name, SPLIT / name)
    argv = {"cp": lambda out: ["cp", "-r", str(SPLIT), str(out / "model")],
            "repair": lambda out: [str(BIN / "graphfix"), "repair", "--no-validate", str(SPLIT), str(out / "model")]}
    times: dict[str, list[float]] = {"cp": [], "repair": []}
    peaks = []
    for run in range(runs):
        for name in (["cp", "repair"] if run % 2 == 0 else ["repair", "cp"]):
            subprocess.run(["sync"], check=True)
            seconds, peak = measure(argv[name](fresh_out()))
            times[name].append(seconds)
            if name == "repair":
                peaks.append(peak)
                merged = (OUT / "model" / "decoder_model_merged.onnx").stat().st_size
    pair = sum((SPLIT / name).stat().st_size for name in SPLIT_FILES[3:])
    return {"cp": statistics.median(times["cp"]), "repair": statistics.median(times["repair"]),
            "ratio": statistics.median(r / c for r, c in zip(times["repair"], times["cp"])), "rss": max(peaks),
            "merged": merged, "pair": pair}


def proof_overhead(model: Path, runs: int = 3) -> dict:
    """What the default (proven) repair costs next to its parts done by hand: `repair --no-validate`, then
    `graphfix validate` of that output. The proof gates (checker, decode loop) should add nothing beyond the
    validation itself. The two sides alternate which runs first; the ratio is the median of the runs' ratios."""
    graphfix = str(BIN / "graphfix")
    proven, parts, ratios = [], [], []
    for run in range(runs):
        sides: dict[str, float] = {}
        for side in (("default", "parts") if run % 2 == 0 else ("parts", "default")):
            out = fresh_out()
            if side == "default":
                sides[side] = measure([graphfix, "repair", str(model), str(out / "fixed.onnx")])[0]
            else:
                unproven = measure([graphfix, "repair", "--no-validate", str(model), str(out / "fixed.onnx")])[0]
                sides[side] = unproven + measure([graphfix, "validate", str(out / "fixed.onnx")])[0]
        proven.append(sides["default"])
        parts.append(sides["parts"])
        ratios.append(sides["default"] / sides["parts"])
    return {"default": statistics.median(proven), "parts": statistics.median(parts),
            "ratio": statistics.median(ratios)}


def startup_cost() -> float:
    return statistics.median(measure([str(BIN / "graphfix"), "--version"])[0] for _ in range(RUNS))


def check_costs(original: Path, repaired: Path) -> dict[str, float]:
    """`check` per file on the embedded model: with findings it answers from the skeleton (onnx strict inference,
    no weight read); "ok" is a promise a client can load it, so there it loads in onnxruntime (the full load)."""
    graphfix = str(BIN / "graphfix")
    return {"findings": statistics.median(measure([graphfix, "check", str(original)], exit_codes=(1,))[0] for _ in range(RUNS)),
            "ok": statistics.median(measure([graphfix, "check", str(repaired)])[0] for _ in range(RUNS))}


def main() -> int:
    made = subprocess.run([sys.executable, str(Path(__file__).with_name("models.py"))], check=True,
                          capture_output=True, text=True).stdout
    models = {label: Path(path) for label, path in json.loads(made.strip().splitlines()[-1]).items()}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(__file__).resolve().parents[1] / "graphfix")],
                   check=True)
    floor = measure(["true"])[1]
    rows = [measure_model(label, path, baseline=label != "sparse > 2 GB", portable=label != "sparse > 2 GB")
            for label, path in models.items()]
    startup = startup_cost()
    repaired = CACHE / "repaired" / "decoder_model_merged.onnx"
    repaired.parent.mkdir(exist_ok=True)
    subprocess.run([str(BIN / "graphfix"), "repair", "--force", "--no-validate", str(models["embedded"]), str(repaired)],
                   check=True, stdout=subprocess.DEVNULL)
    validation = measure([str(BIN / "graphfix"), "validate", str(repaired)])
    check_cost = check_costs(models["embedded"], repaired)
    overhead = proof_overhead(models["embedded"])
    merge = split_merge()
    import decode_compare  # onnxruntime: only now, after every RSS measurement

    decode = decode_compare.compare(EXPORT, repaired)
    shutil.rmtree(OUT, ignore_errors=True)

    print(f"\ngraphfix bench: opus-mt-en-zh dimensions (d_model 512, 6+6 layers, 8 heads, ffn 2048, vocab 65001), "
          f"random weights, exported by optimum-onnx; median of {RUNS} runs (cp and repair in alternating pairs; ratio = median of the pairs' ratios), peak RSS = max over runs\n")
    print("| model | size (on disk) | cp | repair --no-validate | repair / cp | repair peak RSS | "
          "onnx.load+save | load+save RSS |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = f"{r['baseline'][0]:.2f} s | {r['baseline'][1] / MB:.0f} MB" if r["baseline"] else "not run (reads it all) | -"
        print(f"| {r['label']} | {r['size'] / MB:.0f} MB ({r['on_disk'] / MB:.0f} MB) | {r['cp']:.3f} s | "
              f"{r['repair']:.3f} s | {r['ratio']:.1f}x | {r['repair_rss'] / MB:.0f} MB | {base} |")
    print("\nthe portable copy path (Linux-only I/O hidden, as macOS and Windows run it) beside the fast one:\n")
    print("| model | cp | repair (fast path) | repair / cp | repair (portable path) | portable / cp |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r["portable"] is not None:
            print(f"| {r['label']} | {r['cp']:.3f} s | {r['repair']:.3f} s | {r['ratio']:.2f}x | {r['portable']:.3f} s | "
                  f"{r['portable_ratio']:.2f}x |")
    print(f"\npeak RSS floor inherited from this process (`true` started from here): {floor / MB:.0f} MB")
    print(f"graphfix startup alone (`graphfix --version`, python + imports): {startup:.3f} s")
    print(f"validation (`graphfix validate` on the repaired embedded model, one ORT session + decode loop): "
          f"{validation[0]:.2f} s, peak RSS {validation[1] / MB:.0f} MB")
    print(f"check, per file on the embedded model: {check_cost['findings']:.3f} s with findings (skeleton only, no "
          f"onnxruntime load), {check_cost['ok']:.3f} s on the repaired one (ok: loaded in onnxruntime)")
    print(f"default repair (checker + decode proof, embedded model): {overhead['default']:.2f} s; "
          f"repair --no-validate + validate of its output: {overhead['parts']:.2f} s; "
          f"ratio {overhead['ratio']:.3f} (median of 3 alternating runs)")
    print(f"split export (encoder + decoder_model + decoder_with_past_model, {merge['pair'] / MB:.0f} MB of decoders): "
          f"repair --no-validate DIR OUT (merges the pair, GF401) {merge['repair']:.2f} s, cp -r {merge['cp']:.2f} s, "
          f"ratio {merge['ratio']:.1f}x, peak RSS {merge['rss'] / MB:.0f} MB; merged decoder {merge['merged'] / MB:.0f} MB "
          f"({merge['merged'] / merge['pair']:.2f} of the pair)")
    print("\ndecode 64 tokens greedy, batch 1, source 16 tokens (median of 9, interleaved in alternating order):")
    print(f"  repaired merged, plain present->past loop: {decode['merged_64']:.3f} s")
    print(f"  Optimum split decoders (encoder KV kept from step 1): {decode['split_64']:.3f} s  "
          f"(merged / split, median of the pairs = {decode['merged_over_split']:.3f})")
    print(f"  tokens identical: {decode['tokens_identical']} ({decode['distinct_tokens']} distinct tokens; "
          f"max |logits diff| {decode['max_logits_diff']:.2e})")
    print("  speed-up over the no-cache workaround (no-cache branch over the whole prefix each step):")
    for steps, s in decode["speedup"].items():
        print(f"    {steps:4d} tokens: cached {s['cached']:.3f} s, no-cache {s['no_cache']:.3f} s -> {s['ratio']:.1f}x "
              f"(tokens identical: {s['tokens_identical']})")

    embedded, external, sparse = rows
    targets = [
        (f"embedded repair <= 3x cp ({embedded['ratio']:.2f}x)", embedded["ratio"] <= 3),
        *[(f"{r['label']} repair peak RSS <= 200 MB ({r['repair_rss'] / MB:.0f} MB)", r["repair_rss"] <= 200 * MB)
          for r in rows],
        *[(f"{r['label']} repair <= 0.5 s ({r['repair']:.3f} s)", r["repair"] <= 0.5) for r in (external, sparse)],
        (f"default repair <= 1.15x (repair --no-validate + validate) ({overhead['ratio']:.3f}x)",
         overhead["ratio"] <= 1.15),
        (f"64 tokens merged within 5 % of split ({(decode['merged_over_split'] - 1) * 100:+.1f} %)",
         decode["merged_over_split"] <= 1.05),
        ("64 tokens identical to split", decode["tokens_identical"]),
        (f"split export repair peak RSS <= 200 MB ({merge['rss'] / MB:.0f} MB)", merge["rss"] <= 200 * MB),
        (f"merged decoder of a split pair <= 0.55 of the pair: weights once ({merge['merged'] / merge['pair']:.2f})",
         merge["merged"] <= 0.55 * merge["pair"]),
    ]
    print()
    for text, ok in targets:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
