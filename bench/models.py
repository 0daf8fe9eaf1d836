"""The benchmark's models, generated once and cached under build/bench/.

- opus-mt-en-zh/: the whole Optimum export (encoder, split decoders, merged decoder) of a random-weight Marian with
  opus-mt-en-zh's real dimensions, made by the real exporter (bench/export_marian.py in the exporter venv).
- external/: the same merged decoder saved with its weights in `decoder_model_merged.onnx_data`.
- sparse-2g5/: the same graph and weights, external, behind an unused 2.5 GiB tensor that is a hole of the data
  file: a > 2 GB external-data decoder that costs ~370 MB of disk.
- marian-50mb/, marian-1gb/: the client files (encoder, merged decoder, configs) of Marians scaled to those
  merged-decoder sizes (export_marian.SIZES), for the proof's costs (proof_costs.py); marian-1gb-external/: the 1 GB
  one's merged decoder saved with its weights in external data; marian-1gb-sparse/: that one behind an unused
  2.5 GiB tensor, as sparse-2g5/ (a 3.4 GB external-data decoder on 0.9 GB of disk, whose proof loads 0.9 GB).
  Larger real sizes are out of reach of the exporter here: exporting the 0.94 GB decoder peaked at 8.2 GB of RSS
  (3 min 15 s), and the peak grows with the model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "bench"
EXPORT = CACHE / "opus-mt-en-zh"
MERGED = "decoder_model_merged.onnx"
DATA = MERGED + "_data"
HOLE = 5 << 29  # 2.5 GiB


def _export(out: Path = EXPORT, *size: str) -> None:
    """The real exporter into `out` (export_marian.py renames its own .partial into place)."""
    # make bench passes its EXPORT_CURRENT venv (overridable: make bench EXPORT_CURRENT=path)
    python = Path(os.environ.get("GRAPHFIX_EXPORT_PYTHON") or ROOT / ".venv-export-current" / "bin" / "python")
    if not python.exists():
        raise SystemExit(f"{python} is missing: run `make {python.parent.parent.name}/.installed` first")
    subprocess.run([str(python), str(ROOT / "bench" / "export_marian.py"), "--out", str(out), *size], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _build(directory: Path, make) -> Path:
    """Make `directory` through a .partial twin renamed at the end, so an interrupted run leaves no half cache."""
    if not (directory / MERGED).exists():
        partial = directory.with_name(directory.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        make(partial)
        shutil.rmtree(directory, ignore_errors=True)
        partial.rename(directory)
    return directory / MERGED


def _external(directory: Path, source: Path = EXPORT) -> None:
    import onnx

    model = onnx.load(source / MERGED)
    onnx.save(model, directory / MERGED, save_as_external_data=True, all_tensors_to_one_file=True,
              location=DATA, size_threshold=1024)


def _sparse(directory: Path, source: Path = CACHE / "external") -> None:
    """The external variant's data moved HOLE bytes further into a new file, and a tensor covering the hole."""
    import onnx

    model = onnx.load(source / MERGED, load_external_data=False)
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "offset":
                    entry.value = str(int(entry.value) + HOLE)
    hole = onnx.TensorProto(name="bench/unused_2_5_GiB", data_type=onnx.TensorProto.FLOAT, dims=[HOLE // 4],
                            data_location=onnx.TensorProto.EXTERNAL)
    for key, value in (("location", DATA), ("offset", "0"), ("length", str(HOLE))):
        hole.external_data.add(key=key, value=value)
    model.graph.initializer.append(hole)
    onnx.save(model, directory / MERGED)
    with open(source / DATA, "rb") as src, open(directory / DATA, "wb") as dst:
        size, done = os.fstat(src.fileno()).st_size, 0
        while done < size:
            done += os.copy_file_range(src.fileno(), dst.fileno(), size - done, done, HOLE + done)


def ensure_models() -> dict[str, Path]:
    """Run in its own process by the benchmark (see run.py: a child inherits its parent's peak RSS)."""
    if not (EXPORT / MERGED).exists():
        _export()
    return {"embedded": EXPORT / MERGED, "external": _build(CACHE / "external", _external),
            "sparse > 2 GB": _build(CACHE / "sparse-2g5", _sparse)}


PROOF_SIZES = {"50 MB": "50mb", "1 GB": "1gb"}


def ensure_sized_models() -> dict[str, Path]:
    """The merged decoders of the proof benchmark's sizes, exported on first use, beside their encoders; and the
    largest again with external data."""
    models = {}
    for label, size in PROOF_SIZES.items():
        directory = CACHE / f"marian-{size}"
        if not (directory / MERGED).exists():
            _export(directory, "--size", size, "--client-files")
        models[label] = directory / MERGED
    largest = next(reversed(PROOF_SIZES.values()))
    external = CACHE / f"marian-{largest}-external"
    models[f"{label}, external data"] = _build(external, lambda out: _external(out, CACHE / f"marian-{largest}"))
    models[f"{label} + 2.5 GiB hole, external"] = _build(CACHE / f"marian-{largest}-sparse",
                                                         lambda out: _sparse(out, external))
    models["3 GB, external data"] = _build(CACHE / f"marian-{largest}-widened",
                                           lambda out: _widened(out, CACHE / f"marian-{largest}"))
    return models


WIDENED_VOCAB = 350_001  # 1 GB's merged decoder + 285,000 rows of 2 x 1024 floats: about 3 GB


def _widened(directory: Path, source: Path) -> None:
    """The 1 GB export's merged decoder with its vocabulary widened to WIDENED_VOCAB tokens, saved with external data
    as Optimum saves a decoder above 2 GB: a 3 GB decoder whose every weight a session loads. Exporting one at that
    size (mBART-large's dimensions) needs about 25 GB of memory; the vocabulary is the one dimension that the graph
    names only in the embedding, the LM head, the logits bias and the logits' declared shape, so widening it there
    gives the graph the exporter would write. The new rows are drawn like the exported ones (same mean and std)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(source / MERGED)
    vocab = model.graph.output[0].type.tensor_type.shape.dim[2].dim_value
    rng = np.random.default_rng(0)
    for index, tensor in enumerate(model.graph.initializer):
        if vocab not in tensor.dims:
            continue
        array = numpy_helper.to_array(tensor)
        axis = list(array.shape).index(vocab)
        shape = list(array.shape)
        shape[axis] = WIDENED_VOCAB - vocab
        extra = rng.normal(float(array.mean()), float(array.std()), size=shape).astype(array.dtype)
        model.graph.initializer[index].CopyFrom(numpy_helper.from_array(np.concatenate([array, extra], axis),
                                                                         tensor.name))
        del array, extra

    def widen(graph: onnx.GraphProto) -> None:
        for output in graph.output:
            for dim in output.type.tensor_type.shape.dim:
                if dim.dim_value == vocab:
                    dim.dim_value = WIDENED_VOCAB
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    widen(attribute.g)

    widen(model.graph)
    onnx.save(model, directory / MERGED, save_as_external_data=True, all_tensors_to_one_file=True, location=DATA,
              size_threshold=1024)


def files_of(model: Path) -> list[Path]:
    """The model file and its external data, if any: what `cp` has to copy."""
    data = model.with_name(DATA)
    return [model, data] if data.exists() else [model]


if __name__ == "__main__":
    models = ensure_sized_models() if sys.argv[1:] == ["--proof-sizes"] else ensure_models()
    print(json.dumps({label: str(path) for label, path in models.items()}))
    sys.exit(0)
