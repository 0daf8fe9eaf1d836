"""Fuzzing the real samples: graphfix never crashes, never hangs, never writes an output that fails its own proof.

Every committed exporter sample is mutated (tests/protobuf_mutations.py: raw bit flips, truncations, duplicated or
removed spans; structural removal, duplication, swap, renumbering of protobuf fields and changed varints, half of
them aimed at the signature: inputs, outputs and value infos, where past/present mapping and shapes live) and run
through the CLI in-process:

- `check` (most cases, cheap): the library returns a result or raises a GraphfixError, never anything else; the
  CLI exits 0, 1 or 2 with no traceback and every stderr line an `error:` line.
- `repair` with validation (a subset): the same, no "unexpected" error (the CLI's label for a bug), the input
  untouched; on failure nothing under OUT and no temp directory; on success `validate OUT` holds and `check OUT`
  finds nothing.

`make test` runs a fixed (derandomized) few hundred cases; `make fuzz` (HYPOTHESIS_PROFILE=fuzz) runs thousands of
random ones. Each case has a deadline, and a watchdog dumps the stacks and ends the run if one ever hangs.
"""

from __future__ import annotations

import faulthandler
import hashlib
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from graphfix import GraphfixError, check

from .. import protobuf_mutations as pm
from ..conftest import FIXED_SHAPE_SAMPLES, SAMPLES

pytestmark = pytest.mark.slow  # fuzzing: make test

# `cli` is a stateless CliRunner wrapper, safe to share between examples.
SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", derandomize=True, database=None, print_blob=True,
                          suppress_health_check=SUPPRESSED)
settings.register_profile("fuzz", print_blob=True,
                          suppress_health_check=SUPPRESSED)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
FUZZING = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"

CHECK_CASES = 5000 if FUZZING else 300
REPAIR_CASES = 1000 if FUZZING else 100
HANG_SECONDS = 300  # the watchdog: far beyond any case (check ~30 ms, repair ~0.3 s), only a real hang reaches it

FUZZ_SAMPLES = SAMPLES + FIXED_SHAPE_SAMPLES
RAW = ["bit-flip", "truncate", "span-remove", "span-duplicate"]
STRUCTURAL = ["field-remove", "field-duplicate", "field-swap", "field-renumber", "varint-change"]
VARINTS = [0, 1, 2, 3, 7, 8, 11, 16, 255, 1 << 31, (1 << 63) - 1, (1 << 64) - 1]


@pytest.fixture(autouse=True)
def watchdog():
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def signature_fields(fields) -> list[int]:
    """Fields inside a ValueInfo (graph inputs, outputs, value_info, in the main graph and both If branches)."""
    inside: list[int] = []
    for index, field in enumerate(fields):
        parent = field.parent
        while parent != -1 and fields[parent].message != "ValueInfo":
            parent = fields[parent].parent
        if parent != -1 or field.message == "ValueInfo":
            inside.append(index)
    return inside


_SIGNATURES: dict[Path, list[int]] = {}


class Mutant(tuple):
    """(label, bytes), shown by its label only: a falsifying example names the sample and the mutation."""

    def __repr__(self) -> str:
        return repr(self[0])


@st.composite
def mutated_models(draw) -> Mutant:
    return Mutant(draw(_mutation()))


@st.composite
def _mutation(draw) -> tuple[str, bytes]:
    sample = draw(st.sampled_from(FUZZ_SAMPLES))
    data, fields = pm.parsed(sample)
    kind = draw(st.sampled_from(RAW + STRUCTURAL))
    label = f"{sample.parent.name}/{sample.name} {kind}"
    if kind in RAW:
        start = draw(st.integers(0, len(data) - 1))
        if kind == "bit-flip":
            bit = draw(st.integers(0, 7))
            return f"{label} byte {start} bit {bit}", data[:start] + bytes([data[start] ^ (1 << bit)]) + data[start + 1:]
        if kind == "truncate":
            return f"{label} at {start}", data[:start]
        end = draw(st.integers(start + 1, min(len(data), start + 4096)))
        if kind == "span-remove":
            return f"{label} [{start}:{end}]", data[:start] + data[end:]
        return f"{label} [{start}:{end}]", data[:end] + data[start:end] + data[end:]

    if draw(st.booleans()):
        pool = _SIGNATURES.setdefault(sample, signature_fields(fields))
        index = pool[draw(st.integers(0, len(pool) - 1))]
    else:
        index = draw(st.integers(0, len(fields) - 1))
    if kind == "varint-change":
        varints = [i for i, f in enumerate(fields) if f.wire == pm.VARINT and abs(i - index) < 200]
        index = varints[draw(st.integers(0, len(varints) - 1))] if varints else index
    field = fields[index]
    whole = data[field.start:field.end]
    label = f"{label} field #{index} (number {field.number} of {fields[field.parent].message if field.parent >= 0 else 'Model'})"
    if kind == "field-remove":
        return label, pm.replace(data, fields, field.parent, field.start, field.end, b"")
    if kind == "field-duplicate":
        return label, pm.replace(data, fields, field.parent, field.start, field.end, whole + whole)
    if kind == "field-swap":
        others = pm.siblings(fields, index)
        if not others:
            return label, data
        other = fields[others[draw(st.integers(0, len(others) - 1))]]
        first, second = sorted([field, other], key=lambda f: f.start)
        swapped = data[second.start:second.end] + data[first.end:second.start] + data[first.start:first.end]
        return f"{label} <-> {other.number}", pm.replace(data, fields, field.parent, first.start, second.end, swapped)
    if kind == "field-renumber":
        number = draw(st.integers(1, 30))
        return f"{label} -> {number}", pm.replace(data, fields, field.parent, field.start, field.length_start
                                                  if field.wire == pm.LEN else field.value_start,
                                                  pm.tag(number, field.wire))
    if field.wire != pm.VARINT:
        return label, data
    value = draw(st.sampled_from(VARINTS) | st.integers(0, (1 << 64) - 1))
    return f"{label} = {value}", pm.replace(data, fields, field.parent, field.start, field.end,
                                           pm.tag(field.number, pm.VARINT) + pm.varint(value))


def assert_clean_cli_result(result, label: str) -> None:
    assert result.exit_code in (0, 1, 2), (label, result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (label, repr(result.exception))
    assert "Traceback" not in result.stderr, (label, result.stderr)
    assert all(line.startswith("error: ") for line in result.stderr.splitlines()), (label, result.stderr)
    assert "error: unexpected" not in result.stderr, (label, result.stderr)  # the CLI's label for a bug


@settings(max_examples=CHECK_CASES, deadline=30_000)
@given(case=mutated_models())
def test_check_of_a_mutated_sample_exits_0_1_or_2_and_never_crashes(case, cli):
    label, data = case
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "decoder_model_merged.onnx"
        path.write_bytes(data)
        try:
            findings = check(path).findings
            event(f"check: {(len(findings) and 'findings') or 'clean'}")
        except GraphfixError as err:
            event(f"check: refused ({type(err).__name__})")
        result = cli("check", path)
        assert_clean_cli_result(result, label)
        if result.exit_code == 2:
            assert len(result.stderr.splitlines()) == 1, (label, result.stderr)


@settings(max_examples=REPAIR_CASES, deadline=120_000)
@given(case=mutated_models())
def test_repair_of_a_mutated_sample_never_crashes_nor_writes_an_output_that_fails_validation(case, cli):
    label, data = case
    with tempfile.TemporaryDirectory() as directory:
        source = Path(directory) / "in" / "decoder_model_merged.onnx"
        source.parent.mkdir()
        source.write_bytes(data)
        out_dir = Path(directory) / "out"
        out_dir.mkdir()
        out = out_dir / "decoder_model_merged.onnx"

        result = cli("repair", source, out)
        event(f"repair: exit {result.exit_code}")
        assert_clean_cli_result(result, label)
        assert hashlib.sha256(source.read_bytes()).digest() == hashlib.sha256(data).digest(), label
        if result.exit_code != 0:
            assert len(result.stderr.splitlines()) == 1, (label, result.stderr)
            assert list(out_dir.iterdir()) == [], (label, result.stderr)  # no OUT, no temp directory
            return
        assert [p.name for p in out_dir.iterdir()] == [out.name], label
        proof = cli("validate", out)
        assert proof.exit_code == 0, (label, proof.output)
        again = cli("check", out)
        assert again.exit_code == 0, (label, again.output)


# --- hostile external data and model directories (issue 14) -------------------------------------------------------
# External-data fields of a real sample (its weights in one data file) set to hostile values, and the files they
# name replaced by links out, FIFOs, directories; model directories given links out, loops, FIFOs and odd modes.
# Whatever the mutation: exit 0, 1 or 2 with one line, never "unexpected", never a hang, the input untouched, no
# debris, and nothing from outside the model's directory in OUT.

EXTERNAL_CASES = 600 if FUZZING else 60
TREE_CASES = 400 if FUZZING else 40
SECRET_BYTES = b"SECRET!!" * 64
_EXTERNAL_BASE: dict[str, bytes] = {}


def _external_base() -> tuple[bytes, bytes]:
    """marian (legacy) with every tensor in decoder_model_merged.onnx_data: (model bytes, data bytes), made once."""
    if not _EXTERNAL_BASE:
        import onnx

        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "decoder_model_merged.onnx"
            onnx.save(onnx.load(SAMPLES[0].parent / "marian.onnx"), path, save_as_external_data=True,
                      location="decoder_model_merged.onnx_data", size_threshold=0)
            _EXTERNAL_BASE["model"] = path.read_bytes()
            _EXTERNAL_BASE["data"] = path.with_name("decoder_model_merged.onnx_data").read_bytes()
    return _EXTERNAL_BASE["model"], _EXTERNAL_BASE["data"]


FILE_MUTATIONS = ["none", "data-is-a-link-out", "data-is-a-fifo", "data-is-a-directory", "data-mode-000",
                  "data-truncated", "data-is-a-link-in"]


@st.composite
def external_data_mutations(draw) -> Mutant:
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(pm.DATA_KEYS))
        pool = pm.HOSTILE_LOCATIONS if key == "location" else pm.HOSTILE_NUMBERS
        value = draw(st.sampled_from(pool) | st.none() | st.text(max_size=12))
        edits.append((draw(st.integers(0, 1000)), key, value))
    files = draw(st.sampled_from(FILE_MUTATIONS))
    return Mutant((f"edits {edits} files {files}", (edits, files)))


def _hostile_model_dir(root: Path, edits, files: str) -> Path:
    import onnx

    from graphfix.io.external_data import external_tensors

    model_bytes, data = _external_base()
    source = root / "m"
    (source / "sub").mkdir(parents=True)
    (root / "secret.bin").write_bytes(SECRET_BYTES * (len(data) // len(SECRET_BYTES) + 1))
    (source / "link-out").symlink_to(root / "secret.bin")
    (source / "link-in").symlink_to("decoder_model_merged.onnx_data")
    os.mkfifo(source / "pipe")
    data_path = source / "decoder_model_merged.onnx_data"
    if files == "data-is-a-link-out":
        data_path.symlink_to(root / "secret.bin")
    elif files == "data-is-a-fifo":
        os.mkfifo(data_path)
    elif files == "data-is-a-directory":
        data_path.mkdir()
    elif files == "data-is-a-link-in":
        (source / "sub" / "real.bin").write_bytes(data)
        data_path.symlink_to("sub/real.bin")
    else:
        data_path.write_bytes(data[: len(data) // 2] if files == "data-truncated" else data)
        if files == "data-mode-000":
            data_path.chmod(0)
    model = onnx.ModelProto.FromString(model_bytes)
    tensors = external_tensors(model)
    for index, key, value in edits:
        value = str(root / "secret.bin") if value == pm.SECRET else value
        pm.set_external_entry(tensors[index % len(tensors)], key, value)
    (source / "decoder_model_merged.onnx").write_bytes(model.SerializeToString())
    return source


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root but OUT (links not followed): its type, mode and, for regular files, its bytes' digest."""
    import stat

    shot = {}
    for path in sorted(root.rglob("*")):
        if path.relative_to(root).parts[0] == "out":
            continue
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).digest() if stat.S_ISREG(info.st_mode) and info.st_mode & 0o444 \
            else None
        shot[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode), info.st_mode & 0o7777, digest)
    return shot


def _assert_nothing_from_outside(out_dir: Path, label: str) -> None:
    for path in out_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert SECRET_BYTES[:16] not in path.read_bytes(), (label, path)


@settings(max_examples=EXTERNAL_CASES, deadline=60_000)
@given(case=external_data_mutations())
def test_hostile_external_data_is_refused_or_repaired_never_leaked_never_a_crash(case, cli):
    label, (edits, files) = case
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        source = _hostile_model_dir(root, edits, files)
        out_dir = root / "out"
        out_dir.mkdir()
        before = _snapshot(root)
        checked = cli("check", source / "decoder_model_merged.onnx")
        assert_clean_cli_result(checked, label)
        result = cli("repair", source / "decoder_model_merged.onnx", out_dir / "model.onnx", "--no-validate")
        event(f"external data: exit {result.exit_code}")
        assert_clean_cli_result(result, label)
        assert _snapshot(root) == before, label  # the input and the files beside it untouched, nothing created
        if result.exit_code != 0:
            assert len(result.stderr.splitlines()) == 1, (label, result.stderr)
            assert list(out_dir.iterdir()) == [], label
        _assert_nothing_from_outside(out_dir, label)
        (source / "decoder_model_merged.onnx_data").chmod(0o644) if files == "data-mode-000" else None


TREE_MUTATIONS = ["link-to-outside-file", "link-to-outside-dir", "link-to-self", "link-to-parent", "link-in-file",
                  "link-in-dir", "dangling-link", "fifo", "socket", "mode-0600-file", "mode-0700-dir",
                  "mode-0000-file", "graphfix-debris-dir", "empty-dir", "deep-dirs"]


@st.composite
def tree_mutations(draw) -> Mutant:
    ops = draw(st.lists(st.tuples(st.sampled_from(TREE_MUTATIONS), st.sampled_from(["", "onnx", "onnx/deep"])),
                        min_size=1, max_size=3))
    return Mutant((f"tree {ops}", ops))


def _apply_tree_op(source: Path, root: Path, op: str, where: str, index: int) -> None:
    import socket

    folder = source / where
    name = folder / f"{op}-{index}"
    if op == "link-to-outside-file":
        name.symlink_to(root / "secret.bin")
    elif op == "link-to-outside-dir":
        name.symlink_to(root)
    elif op == "link-to-self":
        name.symlink_to(".")
    elif op == "link-to-parent":
        name.symlink_to("..")
    elif op == "link-in-file":
        name.symlink_to(os.path.relpath(source / "config.json", folder))
    elif op == "link-in-dir":
        name.symlink_to(os.path.relpath(source / "onnx" / "deep", folder))
    elif op == "dangling-link":
        name.symlink_to("nowhere")
    elif op == "fifo":
        os.mkfifo(name)
    elif op == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.bind(str(name))
            except OSError:  # a path too long for a socket: no socket then
                pass
    elif op.startswith("mode-"):
        mode = int(op.split("-")[1], 8)
        if op.endswith("dir"):
            name.mkdir()
            (name / "inside.txt").write_text("inside\n")
        else:
            name.write_text("file\n")
        name.chmod(mode)
    elif op == "graphfix-debris-dir":
        (folder / f".graphfix-old-{index}").mkdir()
    elif op == "empty-dir":
        name.mkdir()
    else:
        deep = name
        for level in range(30):
            deep = deep / f"d{level}"
        deep.mkdir(parents=True)
        (deep / "leaf.txt").write_text("leaf\n")


@settings(max_examples=TREE_CASES, deadline=60_000)
@given(case=tree_mutations())
def test_hostile_model_directories_are_refused_or_copied_whole_never_leaked_never_a_hang(case, cli):
    label, ops = case
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        source = root / "m"
        (source / "onnx" / "deep").mkdir(parents=True)
        (root / "secret.bin").write_bytes(SECRET_BYTES)
        (source / "decoder_model_merged.onnx").write_bytes((SAMPLES[0].parent / "marian.onnx").read_bytes())
        (source / "config.json").write_text("{}\n")
        (source / "onnx" / "deep" / "README.md").write_text("dummy\n")
        for index, (op, where) in enumerate(ops):
            _apply_tree_op(source, root, op, where, index)
        before = _snapshot(root)
        out = root / "out"
        result = cli("repair", source, out, "--no-validate")
        event(f"tree: exit {result.exit_code}")
        assert_clean_cli_result(result, label)
        assert _snapshot(root) == before, label
        assert [p.name for p in root.glob(".graphfix-*")] == [], label
        if result.exit_code != 0:
            assert len(result.stderr.splitlines()) == 1 and not out.exists(), (label, result.stderr)
            return
        _assert_nothing_from_outside(out, label)
        # Every regular file carried, with its mode (and so every directory holding one: an empty directory is not
        # carried, found by this fuzzer and left as it is).
        for path in source.rglob("*"):
            relative = path.relative_to(source)
            if any(part.startswith(".graphfix-") for part in relative.parts) or path.is_symlink() or \
                    (path.is_dir() and not any(p.is_file() for p in path.rglob("*"))):
                continue
            copied = out / relative
            assert copied.exists(), (label, relative)
            if relative.as_posix() != "decoder_model_merged.onnx":
                assert copied.stat().st_mode & 0o7777 == path.stat().st_mode & 0o7777, (label, relative)


# --- what fuzzing found, kept as plain regression tests (each was an "error: unexpected ..." crash) ---------------


def _without_logits_output(model):
    model.graph.output.remove(next(v for v in model.graph.output if v.name == "logits"))


def _branch_missing_its_last_output(model):
    if_node = next(n for n in model.graph.node if n.op_type == "If")
    del if_node.attribute[0].g.output[-1]


def _invalid_tensor_data_type(model):
    """On a Constant whose value shape inference reads (the axes of an Unsqueeze in a branch)."""
    if_node = next(n for n in model.graph.node if n.op_type == "If")
    branch = next(a.g for a in if_node.attribute if a.name == "else_branch")
    axes = {n.input[1] for n in branch.node if n.op_type == "Unsqueeze" and len(n.input) > 1}
    constant = next(n for n in branch.node if n.op_type == "Constant" and n.output[0] in axes)
    constant.attribute[0].t.data_type = 255


def _if_without_its_condition(model):
    del next(n for n in model.graph.node if n.op_type == "If").input[:]


def _condition_forwarded_in_a_cycle(model):
    """The If reads `flag`, made by an Identity of itself: walking back to use_cache_branch must end."""
    if_node = next(n for n in model.graph.node if n.op_type == "If")
    if_node.input[0] = "flag"
    from onnx import helper

    model.graph.node.insert(0, helper.make_node("Identity", ["flag"], ["flag"]))


# What graphfix cannot make sense of is shown to onnxruntime first: its reason is what these get.
FOUND = {
    "if-without-its-condition": ("legacy/marian.onnx", _if_without_its_condition,
                                 "cannot load decoder_model_merged.onnx: This is an invalid model"),
    "condition-forwarded-in-a-cycle": ("current/t5.onnx", _condition_forwarded_in_a_cycle,
                                       "cannot load decoder_model_merged.onnx: This is an invalid model"),
    "main-graph-without-logits": ("legacy/bart.onnx", _without_logits_output, "needs input_ids and logits"),
    "branch-returns-fewer-outputs-than-its-if": ("current/marian.onnx", _branch_missing_its_last_output,
                                                 "produce different number of outputs"),
    # onnx's strict inference doubts it first (proof/loadable.py), so onnxruntime's reason is the verdict
    "tensor-with-data-type-255": ("fixed-shape/current-marian-batch2.onnx", _invalid_tensor_data_type,
                                  "cannot load decoder_model_merged.onnx: This is an invalid model. Tensor"),
}


@pytest.mark.parametrize("sample, mutate, mentions", FOUND.values(), ids=FOUND.keys())
def test_malformed_samples_found_by_fuzzing_are_refused_with_one_line_and_exit_2(sample, mutate, mentions, cli,
                                                                                  tmp_path):
    import onnx

    from ..conftest import ROOT

    model = onnx.load(ROOT / "sample_models" / sample)
    mutate(model)
    source = tmp_path / "decoder_model_merged.onnx"
    onnx.save(model, source)
    out = tmp_path / "out.onnx"
    result = cli("repair", source, out)
    assert_clean_cli_result(result, sample)
    assert result.exit_code == 2 and mentions in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1 and not out.exists()


def test_a_decoder_whose_no_cache_path_fails_in_onnxruntime_fails_validation_with_one_line(cli, tmp_path):
    """Found by `make fuzz` (current/bart.onnx, the two inputs of /model/decoder/Reshape swapped): the model loads
    and its first step runs, but full recompute over longer prefixes fails inside onnxruntime, which escaped the
    decode loop as "error: unexpected Fail"."""
    import onnx

    from graphfix.model.graph import all_graphs

    from ..conftest import ROOT

    model = onnx.load(ROOT / "sample_models" / "current" / "bart.onnx")
    reshape = next(n for g, _ in all_graphs(model.graph) for n in g.node if n.name == "/model/decoder/Reshape")
    reshape.input[0], reshape.input[1] = reshape.input[1], reshape.input[0]
    source = tmp_path / "decoder_model_merged.onnx"
    onnx.save(model, source)
    out = tmp_path / "out.onnx"
    result = cli("repair", source, out)
    assert_clean_cli_result(result, "swapped Reshape inputs")
    assert result.exit_code == 1 and "full recompute (no past) fails in onnxruntime" in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1 and not out.exists()
    assert cli("validate", source, "--original", source).exit_code == 1


def test_a_bit_flip_that_breaks_a_name_s_utf8_is_refused_with_one_line_and_exit_2(cli, tmp_path):
    """Found by `make fuzz` (legacy/bart.onnx, byte 44, bit 7): proto2 strings are not checked on parsing, so the
    corrupt name came back as bytes and crashed the first regex match on it."""
    from ..conftest import ROOT

    data = bytearray((ROOT / "sample_models" / "legacy" / "bart.onnx").read_bytes())
    data[44] ^= 0x80
    source = tmp_path / "decoder_model_merged.onnx"
    source.write_bytes(bytes(data))
    for command in (["check", source], ["repair", source, tmp_path / "out.onnx"]):
        result = cli(*command)
        assert result.exit_code == 2 and "not UTF-8 text" in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == 1 and not (tmp_path / "out.onnx").exists()
