"""What each onnxruntime release loads beyond ai.onnx: ai.onnx.ml and com.microsoft, and attributes that became inputs.

Measured on the real wheels from PyPI, each in its own cached venv (graphfix.proof.runtimes; $GRAPHFIX_CACHE),
on 2026-12-01 with CPython 3.11.7 and onnx 1.23.2 building the probe models. Output: graphfix/targets/ort_domains.json.

Per release, inside that release's own onnxruntime:
- ml_max_opset: the highest ai.onnx.ml opset_import at which a one-node ai.onnx.ml Binarizer model loads (1..8 tried);
  ml_refusal: the loader's message one version above it.
- ms_max_opset: the highest com.microsoft opset_import at which a one-node com.microsoft Gelu model loads (1..6 tried).
- contrib_ops {op: since_version}: the com.microsoft schemas the wheel registers, read from
  onnxruntime.capi.onnxruntime_pybind11_state.get_all_operator_schema() (1.16 on). Releases without that binding
  (1.15.1) are probed instead: a one-node model per op name known to any measured release, at com.microsoft opset 1;
  "is not a registered function/op" means absent, any other outcome (loads, or refused for arity/types) means the
  schema exists; the since-version is then 1 (it loads at com.microsoft 1, the only version ms_max_opset allows).
  An op that only such a release had and no later one cannot be seen this way. The probe also runs on releases with
  the binding, and `probe_disagrees` lists ops where the two methods differ (empty when they agree).
  contrib_cpu_kernels: the com.microsoft ops with a CPUExecutionProvider kernel (get_all_opkernel_def(), 1.16 on).
  Stored as the full map for the first release, then per later release only {"added": {...}, "removed": [...]};
  `contrib_ops_of(data, release)` expands them.
- refuses_attribute_as_input: a model at the opset where an attribute became an input, with the old attribute set
  (ReduceMean/ReduceMax/... `axes` at 18, ReduceSum `axes` at 13, Squeeze/Unsqueeze `axes` at 13, Split `split` at
  13). Value: "refused" (loader error: "Unrecognized attribute"), or, if loaded and run, "honoured" (the output shape
  the attribute asks for), "ignored" (the shape of the op without it), or "run fails: <message>".

    .venv/bin/python scripts/probe_ort_domains.py                  # every release below, writes the JSON
    .venv/bin/python scripts/probe_ort_domains.py 1.33.0 --out X   # others (make verify-ort-domains)

Found (2026-12-01, all 18 releases installed): ai.onnx.ml max opset 3 on 1.15-1.16, 4 on 1.17, 5 from 1.18 on;
com.microsoft max opset 1 everywhere (2 is refused: "Current official support for domain com.microsoft is till
opset 1"), every contrib schema has since_version 1, none was removed between releases (95 ops on 1.15.1 by probe,
102 on 1.16.3, 150 on 1.32.0); the load probe agrees with the schema list on every release that has both.
Every release, 1.32.0 included, refuses every leftover attribute tried ("Unrecognized attribute: axes for operator
ReduceMean"), also when the equal input is present, and also inside an If branch (checked by hand on 1.16.3, 1.23.2
and 1.32.0 at opsets 18 and 21, IR 8 and 10).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from graphfix.proof.runtimes import runtime_python

RELEASES = ["1.15.1", "1.16.3", "1.17.3", "1.18.1", "1.19.2", "1.20.1", "1.21.1", "1.22.1", "1.23.2", "1.24.4",
            "1.25.1", "1.26.0", "1.27.0", "1.28.0", "1.29.0", "1.30.0", "1.31.1", "1.32.0"]
OUT = Path(__file__).resolve().parent.parent / "graphfix" / "targets" / "ort_domains.json"  # package data
ML_OPSETS, MS_OPSETS = range(1, 9), range(1, 7)
ABSENT = ("is not a registered function/op", "No Op registered for")

# Runs inside the release's venv: {"models": [{"key", "path", "feeds": {name: [shape, dtype]} or absent}]}
# -> {"version", "schemas": [[name, since, deprecated]] or null, "kernels": [...] or null, "results": {key: ...}}
INSPECT = r"""
import json, sys
import numpy as np, onnxruntime as o
spec = json.loads(open(sys.argv[1]).read())
out = {"version": o.__version__, "schemas": None, "kernels": None, "results": {}}
try:
    from onnxruntime.capi import onnxruntime_pybind11_state as C
except ImportError:
    from onnxruntime.capi import _pybind_state as C
if hasattr(C, "get_all_operator_schema"):
    out["schemas"] = [[s.name, s.since_version, bool(s.deprecated)] for s in C.get_all_operator_schema()
                      if s.domain == "com.microsoft"]
if hasattr(C, "get_all_opkernel_def"):
    out["kernels"] = sorted({k.op_name for k in C.get_all_opkernel_def()
                             if k.domain == "com.microsoft" and k.provider == "CPUExecutionProvider"})
for m in spec["models"]:
    r = {}
    try:
        s = o.InferenceSession(m["path"], providers=["CPUExecutionProvider"])
        r["loaded"] = True
    except Exception as e:
        r["loaded"], r["error"] = False, " ".join(str(e).split())[:1500]
    if r["loaded"] and m.get("feeds"):
        feeds = {n: np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape) for n, (shape, dtype) in m["feeds"].items()}
        try:
            r["shapes"] = [list(y.shape) for y in s.run(None, feeds)]
        except Exception as e:
            r["run_error"] = " ".join(str(e).split())[:400]
    out["results"][m["key"]] = r
print(json.dumps(out))
"""


def _model(op: str, domain: str, opsets: dict[str, int], shape, *, outputs=1, ir=8, const_inputs=None, **attrs):
    """One node on input x; const_inputs {name: int64 values} are further inputs, as initializers."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    names = [f"y{i}" for i in range(outputs)]
    consts = [helper.make_tensor(n, TensorProto.INT64, [len(v)], v) for n, v in (const_inputs or {}).items()]
    node = helper.make_node(op, ["x", *(c.name for c in consts)], names, domain=domain or None, **attrs)
    graph = helper.make_graph([node], "probe", [x],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names],
                              initializer=consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                             ir_version=ir)


REDUCE_18 = ["ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
             "ReduceLogSumExp", "ReduceSumSquare"]
# key -> (op, opset, input shape, attributes, outputs, shapes if the attribute is honoured, shapes if ignored,
#         the input it became). "KEY" has only the old attribute (what an opset bump that forgot to move it leaves);
# "KEY+input" has the attribute and the equal input, so only the leftover attribute can be refused.
_CASES = {
    **{f"{op}@18.axes": (op, 18, [2, 3], {"axes": [1]}, 1, [[2, 1]], [[1, 1]], "axes") for op in REDUCE_18},
    "ReduceSum@13.axes": ("ReduceSum", 13, [2, 3], {"axes": [1]}, 1, [[2, 1]], [[1, 1]], "axes"),
    "Squeeze@13.axes": ("Squeeze", 13, [1, 3, 1], {"axes": [0]}, 1, [[3, 1]], [[3]], "axes"),
    "Unsqueeze@13.axes": ("Unsqueeze", 13, [2, 3], {"axes": [0]}, 1, [[1, 2, 3]], None, "axes"),
    "Split@13.split": ("Split", 13, [3], {"split": [1, 2], "axis": 0}, 2, [[1], [2]], [[2], [1]], "split"),
}
ATTRIBUTE_CASES = {**_CASES, **{f"{key}+input": case for key, case in _CASES.items()}}


def _models(workdir: Path, contrib_names: list[str]) -> list[dict]:
    models = []

    def add(key, model, feeds=None):
        path = workdir / f"{key.replace('@', '_at_').replace('.', '_')}.onnx"
        path.write_bytes(model.SerializeToString())
        models.append({"key": key, "path": str(path), **({"feeds": feeds} if feeds else {})})

    for v in ML_OPSETS:
        add(f"ml{v}", _model("Binarizer", "ai.onnx.ml", {"": 13, "ai.onnx.ml": v}, [2, 3], threshold=0.5))
    for v in MS_OPSETS:
        add(f"ms{v}", _model("Gelu", "com.microsoft", {"": 13, "com.microsoft": v}, [2, 3]))
    for op in contrib_names:
        add(f"contrib.{op}", _model(op, "com.microsoft", {"": 13, "com.microsoft": 1}, [2, 3]))
    for key, (op, opset, shape, attrs, outputs, _, _, moved) in ATTRIBUTE_CASES.items():
        inputs = {moved: attrs[moved]} if key.endswith("+input") else None
        add(f"attr.{key}", _model(op, "", {"": opset}, shape, outputs=outputs, const_inputs=inputs, **attrs),
            feeds={"x": [shape, "float32"]})
    return models


def _inspect(release: str, workdir: Path, contrib_names: list[str]) -> dict:
    python = runtime_python(release)
    spec = workdir / "spec.json"
    spec.write_text(json.dumps({"models": _models(workdir, contrib_names)}))
    done = subprocess.run([str(python), "-c", INSPECT, str(spec)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "inspect failed")
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["version"] == release, (answer["version"], release)
    return answer


def _max_loading(results: dict, prefix: str, versions) -> tuple[int | None, str | None]:
    ok = [v for v in versions if results[f"{prefix}{v}"]["loaded"]]
    best = max(ok) if ok else None
    above = results.get(f"{prefix}{(best or 0) + 1}")
    refusal = above.get("error") if above and not above["loaded"] else None
    if refusal and "Current official support" in refusal:  # the readable sentences of ValidateOpsetForDomain's
        refusal = " ".join(re.findall(r"Opset \d+ is under development[^.]*\.|"
                                      r"Current official support for domain \S+ is till opset \d+", refusal))
    return best, refusal


def _attribute_verdict(case, r: dict) -> str:
    _, _, _, _, _, honoured, ignored, _ = case
    if not r["loaded"]:
        if "Unrecognized attribute" in r["error"]:
            return "refused"
        if "has input size" in r["error"]:
            return "refused: the input is required"
        return f"load fails: {r['error'][r['error'].find('Error '):]}"
    if "run_error" in r:
        return f"run fails: {r['run_error']}"
    if r["shapes"] == honoured:
        return "honoured"
    if r["shapes"] == ignored:
        return "ignored"
    return f"ran, output shapes {r['shapes']}"


def measure(release: str, workdir: Path, contrib_names: list[str]) -> dict:
    answer = _inspect(release, workdir, contrib_names)
    results = answer["results"]
    ml_max, ml_refusal = _max_loading(results, "ml", ML_OPSETS)
    ms_max, ms_refusal = _max_loading(results, "ms", MS_OPSETS)
    probed = {op for op in contrib_names if not any(s in results[f"contrib.{op}"].get("error", "") for s in ABSENT)}
    if answer["schemas"] is not None:
        since: dict[str, list[int]] = {}
        for name, version, _ in answer["schemas"]:
            since.setdefault(name, []).append(version)
        contrib = {op: (v[0] if len(v) == 1 else sorted(v)) for op, v in sorted(since.items())}
        source = "get_all_operator_schema"
        disagrees = sorted(set(contrib) ^ probed)
    else:
        contrib, source, disagrees = {op: 1 for op in sorted(probed)}, "load probe", None
    row = {"ml_max_opset": ml_max, "ml_refusal": ml_refusal, "ms_max_opset": ms_max, "ms_refusal": ms_refusal,
           "contrib_source": source, "contrib_ops": contrib, "contrib_cpu_kernels": answer["kernels"],
           "refuses_attribute_as_input": {key: _attribute_verdict(case, results[f"attr.{key}"])
                                          for key, case in ATTRIBUTE_CASES.items()}}
    if disagrees is not None:
        row["probe_disagrees"] = disagrees
    return row


def _delta(previous: dict | list | None, current: dict | list | None):
    if previous is None or current is None:
        return current
    if isinstance(current, list):
        return {"added": sorted(set(current) - set(previous)), "removed": sorted(set(previous) - set(current))}
    return {"added": {k: v for k, v in current.items() if previous.get(k) != v},
            "removed": sorted(set(previous) - set(current))}


def contrib_ops_of(data: dict, release: str, field: str = "contrib_ops"):
    """Expand the stored deltas: the full `field` (contrib_ops or contrib_cpu_kernels) of one release."""
    full = None
    for name, row in data["releases"].items():
        value = row.get(field)
        if value is None:
            full = None
        elif full is None or "added" not in value:
            full = value
        elif isinstance(full, list):
            full = sorted((set(full) | set(value["added"])) - set(value["removed"]))
        else:
            full = {k: v for k, v in {**full, **value["added"]}.items() if k not in value["removed"]}
        if name == release:
            return full
    raise KeyError(release)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("releases", nargs="*", default=RELEASES)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    rows, unavailable = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        # Pass 1: the schema lists of the releases that expose them give the op names to probe everywhere.
        names: set[str] = set()
        for release in args.releases:
            try:
                answer = _inspect(release, Path(tmp), [])
            except Exception as err:  # a release pip cannot install here is reported, not fatal
                unavailable[release] = str(err)
                print(f"{release}\tunavailable: {err}", flush=True)
                continue
            names |= {name for name, _, _ in answer["schemas"] or []}
        for release in args.releases:
            if release in unavailable:
                continue
            row = measure(release, Path(tmp), sorted(names))
            rows[release] = row
            refused = [k for k, v in row["refuses_attribute_as_input"].items() if v.startswith("refused")]
            print(f"{release}\tml {row['ml_max_opset']}\tms {row['ms_max_opset']}\tcontrib {len(row['contrib_ops'])}"
                  f" ({row['contrib_source']})\tcpu kernels {len(row['contrib_cpu_kernels'] or [])}"
                  f"\trefuses {len(refused)}/{len(ATTRIBUTE_CASES)}", flush=True)
    stored, previous = {}, {}
    for release, row in rows.items():
        row = dict(row)
        for field in ("contrib_ops", "contrib_cpu_kernels"):
            current = row[field]
            row[field] = _delta(previous.get(field), current)
            previous[field] = current
        stored[release] = row
    import onnx

    data = {"measured": {"date": datetime.date.today().isoformat(), "python": sys.version.split()[0], "onnx": onnx.__version__,
                         "script": "scripts/probe_ort_domains.py",
                         "note": "contrib_ops / contrib_cpu_kernels: full for the first release with data, then "
                                 "{added, removed} against the previous release; contrib_ops_of() expands them"},
            "unavailable": unavailable, "releases": stored}
    args.out.write_text(_compact_json(data) + "\n")
    print(f"wrote {args.out}")
    return 0


def _compact_json(data) -> str:
    """One release per block, small maps on one line: readable diffs, small file."""
    text = json.dumps(data, indent=1, sort_keys=False)
    # Collapse any {...} or [...] with no nested containers onto one line.
    pattern = re.compile(r"[\[{]\s*\n(?:[^\[\]{}]*?)\n\s*[\]}]")
    while True:
        new = pattern.sub(lambda m: " ".join(part.strip() for part in m.group(0).splitlines()), text)
        if new == text:
            return text
        text = new


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
