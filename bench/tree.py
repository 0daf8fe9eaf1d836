"""`make bench` (and `make bench-tree` alone): a tree repair against the single repairs it stands for.

The tree: FOLDERS model folders copied from the committed exports (sample_models/exports, merged decoders of four
families), two of them broken (one decoder cut short, one "decoder" that is an encoder). Measured in this one run:
the wall time of `graphfix repair TREE OUT --jobs JOBS`, and the sum of the wall times of `graphfix repair FOLDER
OUT` for each folder, one after the other. The target: tree <= sum / JOBS + 20 %. No torch needed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPORTS = ROOT / "sample_models" / "exports"
FAMILIES = ("current-trocr", "current-marian-opset21", "current-donut", "current-whisper-128-mel")
FOLDERS, JOBS, ALLOWED = 50, 2, 1.20
WORK = ROOT / "build" / "bench-tree"
GRAPHFIX = Path(sys.executable).with_name("graphfix")


def make_tree(tree: Path) -> list[str]:
    shutil.rmtree(tree, ignore_errors=True)
    names = []
    for i in range(FOLDERS - 2):
        family = FAMILIES[i % len(FAMILIES)]
        name = f"{family.removeprefix('current-')}/{i:02d}"
        shutil.copytree(EXPORTS / family, tree / name)
        names.append(name)
    shutil.copytree(EXPORTS / "current-trocr", tree / "broken" / "truncated")
    decoder = tree / "broken" / "truncated" / "decoder_model_merged.onnx"
    decoder.write_bytes(decoder.read_bytes()[:4096])
    shutil.copytree(EXPORTS / "current-trocr", tree / "broken" / "encoder-only")
    shutil.copy(EXPORTS / "current-trocr" / "encoder_model.onnx",
                tree / "broken" / "encoder-only" / "decoder_model_merged.onnx")
    return [*names, "broken/encoder-only", "broken/truncated"]


def timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    return time.perf_counter() - started, done


def main() -> int:
    tree, singles, out = WORK / "models", WORK / "singles", WORK / "out"
    names = make_tree(tree)
    shutil.rmtree(singles, ignore_errors=True)
    total, failed = 0.0, []
    for name in names:  # what a shell loop over the folders costs, one graphfix run each
        (singles / name).parent.mkdir(parents=True, exist_ok=True)
        seconds, done = timed([str(GRAPHFIX), "repair", str(tree / name), str(singles / name)])
        total += seconds
        if done.returncode != 0:
            failed.append(name)
    shutil.rmtree(out, ignore_errors=True)
    wall, done = timed([str(GRAPHFIX), "repair", "--json", "--jobs", str(JOBS), str(tree), str(out)])
    document = json.loads(done.stdout)
    bound = total / JOBS * ALLOWED
    print(f"\n## Tree repair: {FOLDERS} model folders ({len(failed)} broken), --jobs {JOBS}\n")
    print(f"- single repairs, one after the other: {total:.1f} s ({total / len(names):.2f} s per folder); "
          f"failed: {', '.join(failed)}")
    print(f"- `graphfix repair TREE OUT --jobs {JOBS}`: {wall:.1f} s, exit {done.returncode}, "
          f"summary {document['summary']}")
    print(f"- ratio: tree / (sum / {JOBS}) = {wall / (total / JOBS):.3f} (allowed {ALLOWED:.2f})")
    checks = [
        (f"tree repair --jobs {JOBS} <= sum of single repairs / {JOBS} + 20 % ({wall:.1f} s <= {bound:.1f} s)",
         wall <= bound),
        (f"the 2 broken folders failed, the {FOLDERS - 2} others were repaired, exit 3",
         done.returncode == 3 and document["summary"]["failed"] == 2
         and document["summary"]["repaired"] + document["summary"]["nothing_to_repair"] == FOLDERS - 2
         and sorted(failed) == ["broken/encoder-only", "broken/truncated"]),
    ]
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
