"""graphfix without Linux's I/O: the commands run once as they are and once in a Python where `import fcntl` fails,
os has no copy_file_range, sendfile, O_NOFOLLOW or O_NONBLOCK, and nothing under /proc exists
(tests/portable/hidden_linux_apis.py) - what Windows lacks, and macOS in part. Both runs must give the same exit codes and byte-identical
outputs: the portable paths (io/portable.py, the buffered copy in io/datacopy.py) keep the fast paths' results."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from ..conftest import ROOT

HIDDEN = Path(__file__).resolve().parents[1] / "portable" / "hidden_linux_apis.py"
LEGACY_MARIAN = ROOT / "sample_models" / "legacy" / "marian.onnx"
EXPORT = ROOT / "sample_models" / "exports" / "current-marian-opset21"


def graphfix(hidden: bool, *args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(HIDDEN)] if hidden else [sys.executable, "-m", "graphfix"]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def untimed(text: str) -> str:
    """Output with its durations ("0.3 s") left out: the only part that may differ between two runs."""
    return re.sub(r"\b\d+(\.\d+)? s\b", "- s", text)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def both(tmp_path: Path, *args: object) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """The command as is in tmp/fast, and with the Linux-only APIs hidden in tmp/hidden; `{out}` in an argument
    is each run's own directory."""
    runs = []
    for hidden in (False, True):
        out = tmp_path / ("hidden" if hidden else "fast")
        out.mkdir(exist_ok=True)
        runs.append(graphfix(hidden, *(str(a).replace("{out}", str(out)) for a in args), cwd=tmp_path))
    return runs[0], runs[1]


def assert_same_outcome(fast: subprocess.CompletedProcess[str], hidden: subprocess.CompletedProcess[str],
                        tmp_path: Path) -> None:
    assert hidden.returncode == fast.returncode, hidden.stderr
    assert hidden.stderr.replace(str(tmp_path / "hidden"), "") == fast.stderr.replace(str(tmp_path / "fast"), "")
    assert tree(tmp_path / "hidden") == tree(tmp_path / "fast")


def test_the_hidden_mode_really_hides_the_linux_only_apis():
    seen = json.loads(subprocess.run([sys.executable, str(HIDDEN), "--probe"], capture_output=True,
                                     text=True, check=True).stdout)
    assert seen == {"fcntl": False, "copy_file_range": False, "sendfile": False, "pread": False, "preadv": False,
                    "SEEK_DATA": False, "SEEK_HOLE": False, "O_NOFOLLOW": False,
                    "O_NONBLOCK": False, "getuid": False, "SIGXFSZ": False, "/proc/self/fd": False, "reflink": False,
                    "nofollow": False}


def test_repair_of_an_embedded_model_writes_the_same_bytes_without_the_linux_apis(tmp_path):
    fast, hidden = both(tmp_path, "repair", LEGACY_MARIAN, "{out}/fixed.onnx")
    assert fast.returncode == 0, fast.stderr
    assert_same_outcome(fast, hidden, tmp_path)


@pytest.fixture
def external(tmp_path: Path) -> Path:
    """The legacy Marian with its weights in an external data file (onnx's own converter, no other change)."""
    source = tmp_path / "source"
    source.mkdir()
    onnx.save(onnx.load(LEGACY_MARIAN), source / "decoder_model_merged.onnx", save_as_external_data=True,
              location="decoder_model_merged.onnx_data", size_threshold=0)
    return source


def test_repair_of_a_model_with_external_data_writes_the_same_bytes_without_the_linux_apis(tmp_path, external):
    fast, hidden = both(tmp_path, "repair", external / "decoder_model_merged.onnx", "{out}/fixed.onnx", "--copy-data")
    assert fast.returncode == 0, fast.stderr
    assert (tmp_path / "fast" / "fixed.onnx_data").exists()
    assert_same_outcome(fast, hidden, tmp_path)


def test_directory_repair_writes_the_same_tree_without_the_linux_apis(tmp_path):
    source = tmp_path / "export"
    shutil.copytree(EXPORT, source)
    encoder = onnx.load(source / "encoder_model.onnx")
    onnx.save(encoder, source / "encoder_model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="encoder_model.onnx_data", size_threshold=0)
    fast, hidden = both(tmp_path, "repair", source, "{out}/fixed")
    assert fast.returncode == 0, fast.stderr
    assert_same_outcome(fast, hidden, tmp_path)


@pytest.mark.slow  # every verdict twice
def test_check_and_validate_give_the_same_verdicts_without_the_linux_apis(tmp_path, repaired):
    fixed = repaired(LEGACY_MARIAN)
    for args, code in [(("check", LEGACY_MARIAN), 1), (("check", fixed), 0), (("validate", fixed), 0),
                       (("validate", LEGACY_MARIAN), 1)]:
        fast, hidden = both(tmp_path, *args)
        assert fast.returncode == code, fast.stdout + fast.stderr
        assert (hidden.returncode, untimed(hidden.stdout), hidden.stderr) == (fast.returncode, untimed(fast.stdout),
                                                                              fast.stderr)


def test_check_writes_and_reads_its_remembered_outcome_without_posix_owners(tmp_path):
    """Windows has no os.getuid: the outcome cache's own-files-only rule is skipped there, not a crash."""
    env = {**os.environ, "GRAPHFIX_CACHE": str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, str(HIDDEN), "check", LEGACY_MARIAN], capture_output=True, text=True,
                           env=env, timeout=300) for _ in range(2)]  # the first remembers, the second reads it
    assert [run.returncode for run in runs] == [1, 1], runs[0].stderr + runs[1].stderr
    assert untimed(runs[0].stdout) == untimed(runs[1].stdout) and "GF101" in runs[0].stdout
    assert len(list((tmp_path / "cache" / "check-outcomes").iterdir())) == 1


def test_a_fifo_as_external_data_is_refused_not_waited_on_without_o_nonblock(tmp_path, external):
    """Without O_NONBLOCK, opening a FIFO waits for a writer: the portable open looks at the name first."""
    data = external / "decoder_model_merged.onnx_data"
    data.unlink()
    os.mkfifo(data)
    fast, hidden = both(tmp_path, "check", external / "decoder_model_merged.onnx")
    assert fast.returncode == 2 and "is not a regular file" in fast.stderr, fast.stderr
    assert (hidden.returncode, hidden.stderr) == (fast.returncode, fast.stderr)


def test_a_symlinked_data_file_leading_out_is_refused_without_proc_or_o_nofollow(tmp_path, external):
    outside = tmp_path / "elsewhere.bin"
    (external / "decoder_model_merged.onnx_data").rename(outside)
    (external / "decoder_model_merged.onnx_data").symlink_to(outside)
    fast, hidden = both(tmp_path, "check", external / "decoder_model_merged.onnx")
    assert fast.returncode == 2 and "points outside the model's directory" in fast.stderr, fast.stderr
    assert (hidden.returncode, hidden.stderr) == (fast.returncode, fast.stderr)


@pytest.mark.parametrize("hidden", [("copy_file_range", "sendfile"), ("copy_file_range", "sendfile", "preadv")],
                         ids=["positioned-reads", "seek-and-readinto"])
def test_the_buffered_copy_writes_the_bytes_of_the_kernel_copy(tmp_path, monkeypatch, hidden):
    """The copy macOS and Windows take (Windows has no preadv either), in buffers smaller than the ranges, with a
    hole and ranges at odd offsets, against the in-kernel copy of the same pieces."""
    from graphfix.io import datacopy
    from graphfix.io.protowire import SourceRange

    source = tmp_path / "source"
    with open(source, "wb") as f:
        f.write(os.urandom(3 << 20))
        f.seek(1 << 20, os.SEEK_CUR)  # a hole
        f.write(os.urandom(12345))
    pieces = [b"head", SourceRange(7, (2 << 20) + 3), b"middle", SourceRange(3 << 20, source.stat().st_size), b"end"]
    fd = os.open(source, os.O_RDONLY)
    try:
        datacopy.copy_fd(fd, tmp_path / "fast-copy", "copy")
        datacopy.write_pieces(pieces, fd, tmp_path / "fast-pieces")
        with monkeypatch.context() as m:
            for name in hidden:
                m.delattr(os, name)
            m.setattr(datacopy, "_BUFFER", 1 << 20)
            datacopy.copy_fd(fd, tmp_path / "portable-copy", "copy")
            datacopy.write_pieces(pieces, fd, tmp_path / "portable-pieces")
    finally:
        os.close(fd)
    assert (tmp_path / "portable-copy").read_bytes() == (tmp_path / "fast-copy").read_bytes() == source.read_bytes()
    assert (tmp_path / "portable-pieces").read_bytes() == (tmp_path / "fast-pieces").read_bytes()
    assert (tmp_path / "portable-pieces").stat().st_size == 4 + (2 << 20) - 4 + 6 + (1 << 20) + 12345 + 3
