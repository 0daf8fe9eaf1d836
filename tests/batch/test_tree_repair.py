"""`graphfix repair TREE OUT`: a tree of model folders (copies of committed exports, one truncated, one whose
"decoder" is an encoder) repaired in one run, going on past the bad ones, with one table, one JSON document and
the documented exit code; the runtime installed once however many processes want it; `make repair` on top."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graphfix import ModelOutcome, RepairOptions, TreeRepairResult, repair_tree

from ..cli.test_json_and_hook import DOCUMENTS, conforms
from ..conftest import ROOT

EXPORTS = ROOT / "sample_models" / "exports"
GOOD = {"trocr": "current-trocr", "group/marian": "current-marian-opset21"}
BAD = ("broken", "not-a-decoder")


def graphfix(*args, **kwargs) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("env", {**os.environ, "COLUMNS": "200"})  # the table drawn, not stacked, whatever the paths
    script = Path(sys.executable).with_name("graphfix")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "graphfix"]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=300, **kwargs)


def make_tree(root: Path, *, bad: bool = True, good: dict[str, str] = GOOD) -> Path:
    for name, export in good.items():
        shutil.copytree(EXPORTS / export, root / name)
    if bad:
        broken = root / "broken"
        shutil.copytree(EXPORTS / "current-trocr", broken)
        data = (broken / "decoder_model_merged.onnx").read_bytes()
        (broken / "decoder_model_merged.onnx").write_bytes(data[:len(data) // 3])  # a copy cut short
        shutil.copytree(EXPORTS / "current-trocr", root / "not-a-decoder")
        shutil.copy(EXPORTS / "current-trocr" / "encoder_model.onnx",
                    root / "not-a-decoder" / "decoder_model_merged.onnx")
    (root / "README.md").write_text("not a model folder: left alone\n")
    return root


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def debris(root: Path) -> list[Path]:
    return [p for p in root.rglob(".graphfix-*")] if root.exists() else []


def test_a_tree_with_jobs_2_writes_the_good_folders_names_the_bad_ones_and_exits_3(tmp_path):
    tree, out = make_tree(tmp_path / "models"), tmp_path / "fixed"
    result = graphfix("repair", "--jobs", "2", tree, out)
    assert result.returncode == 3, result.stderr
    for name in GOOD:  # the same relative folder, every file carried over, proven
        assert files(out / name) == files(tree / name)
    assert not (out / "broken").exists() and not (out / "not-a-decoder").exists() and not debris(out)
    errors = result.stderr.splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors), result.stderr
    broken, not_a_decoder = sorted(errors)
    assert str(tree / "broken" / "decoder_model_merged.onnx") in broken and "copy or export it again" in broken
    assert str(tree / "not-a-decoder" / "decoder_model_merged.onnx") in not_a_decoder
    assert "nothing to repair" in not_a_decoder
    table = result.stdout.splitlines()  # one table: its title, a header, one row per folder; then the summary
    assert table[0] == f"{tree} -> {out}" and table[2].split() == ["model", "outcome", "findings", "oldest",
                                                                   "onnxruntime", "time"]
    rows = {line.split()[0]: line.split()[1] for line in table[4:-2]}
    assert rows == {"broken": "FAILED", "group/marian": "repaired", "not-a-decoder": "FAILED", "trocr": "repaired"}
    assert table[-1].startswith(f"repaired 2 of 4 model folders of {tree} -> {out} (2 failed: broken, not-a-decoder)")


def test_the_json_document_holds_every_folder_and_follows_the_schema(tmp_path):
    tree, out = make_tree(tmp_path / "models"), tmp_path / "fixed"
    result = graphfix("repair", "--json", "--no-validate", "--jobs", "2", tree, out)
    assert result.returncode == 3 and result.stderr == ""
    document = json.loads(result.stdout)
    conforms(document, DOCUMENTS["repair tree"])
    assert document["ok"] is False and document["exit_code"] == 3
    assert document["summary"] == {"models": 4, "repaired": 2, "nothing_to_repair": 0, "failed": 2}
    by_folder = {m["folder"]: m for m in document["models"]}
    assert by_folder["trocr"]["result"]["output"] == str(out / "trocr") and by_folder["trocr"]["findings"] > 0
    assert by_folder["broken"]["exit_code"] == 2 and str(tree / "broken") in by_folder["broken"]["error"]


def test_the_library_takes_the_same_and_returns_typed_results(tmp_path):
    tree = make_tree(tmp_path / "models")
    result = repair_tree(tree, tmp_path / "fixed", RepairOptions(validate=False))
    assert isinstance(result, TreeRepairResult) and all(isinstance(m, ModelOutcome) for m in result.models)
    assert [m.folder for m in result.models] == ["broken", "group/marian", "not-a-decoder", "trocr"]
    assert [m.outcome for m in result.models] == ["failed", "repaired", "failed", "repaired"]
    assert result.exit_code == 3 and result.models[3].oldest_onnxruntime is not None


def test_all_repaired_is_0_none_repaired_is_2_and_force_replaces_a_previous_output(tmp_path, cli):
    good = make_tree(tmp_path / "good", bad=False)
    assert cli("repair", "--no-validate", good, tmp_path / "out").exit_code == 0
    again = cli("repair", "--no-validate", good, tmp_path / "out")  # an output folder is never replaced silently
    assert again.exit_code == 2 and "already exists" in again.stderr
    retargeted = cli("repair", "--force", "--no-validate", "--skip-target-load", "--target-ort", "1.16", good,
                     tmp_path / "out")
    assert retargeted.exit_code == 0, retargeted.stderr
    import onnx

    assert onnx.load(tmp_path / "out" / "group" / "marian" / "decoder_model_merged.onnx").opset_import[0].version <= 19
    assert not debris(tmp_path / "out")
    bad = make_tree(tmp_path / "bad", good={})
    assert cli("repair", "--no-validate", bad, tmp_path / "bad-out").exit_code == 2


def test_the_command_check_suggests_for_a_tree_works(tmp_path, cli):
    tree = make_tree(tmp_path / "models", bad=False)
    suggested = [line for line in cli("check", tree).stdout.splitlines() if line.startswith("next: graphfix repair")]
    assert suggested == [f"next: graphfix repair {tree} OUT"]
    command = suggested[0].removeprefix("next: graphfix ").replace("OUT", str(tmp_path / "fixed")).split()
    assert cli(*command).exit_code == 0
    assert files(tmp_path / "fixed" / "group" / "marian") == files(tree / "group" / "marian")


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        children = [child for child, p in parents.items() if p == parent]
        found.update(children)
        todo += children
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow  # signals at points of a real run: make test, with the other signal suites
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="counts processes through /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_tree_repair_leaves_no_partial_folder_and_no_child(sig, tmp_path):
    tree = make_tree(tmp_path / "models", bad=False, good={f"m{i}": "current-trocr" for i in range(6)})
    out = tmp_path / "fixed"
    script = Path(sys.executable).with_name("graphfix")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "graphfix"]
    proc = subprocess.Popen([*command, "repair", "--jobs", "2", str(tree), str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(seen) < 4:  # two workers and their proofs under way
        seen |= _descendants(proc.pid)
        time.sleep(0.05)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr
    assert stderr.splitlines()[-1].startswith("error: interrupted"), stderr
    assert not [pid for pid in seen if _alive(pid)], "a child survived"
    landed = [p for p in out.iterdir()] if out.exists() else []
    for folder in landed:  # each folder there is complete
        assert files(folder) == files(tree / folder.name)
    assert not debris(out) and not debris(tmp_path / "models")


INSTALL_ONCE = """
import os, sys, time
from pathlib import Path
from graphfix.proof import interpreters, runtimes

interpreters_found = interpreters.Interpreter(Path(sys.executable), tuple(sys.version_info[:2]))
runtimes.find_interpreter = lambda version: interpreters_found

def make(home, version, interpreter):  # stands for venv + pip: slow, and done by one process only
    with open(os.environ["MADE_LOG"], "a") as log:
        log.write(f"{os.getpid()}\\n")
    deadline = time.monotonic() + 30
    while WAITED.read_text().count("w") < 2 and time.monotonic() < deadline:  # until the other two wait for it
        time.sleep(0.01)
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "python").symlink_to(sys.executable)
    (home / runtimes.COMPLETE).write_text("onnxruntime==1.16.3 numpy==1.26.4 verified\\n")  # as a verified one is
    return home / "bin" / "python"

def waiting(release, home):
    print("waiting", release, flush=True)
    with WAITED.open("a") as log:
        log.write("w")

WAITED = Path(os.environ["MADE_LOG"] + ".waited")
WAITED.touch()
runtimes._make_runtime = make
runtimes.runtime_python("1.16.3", on_install=lambda r, h: print("installing", r, flush=True), on_wait=waiting)
"""


def test_two_processes_needing_a_runtime_install_it_once_and_the_other_says_it_waits(tmp_path):
    env = {**os.environ, "GRAPHFIX_CACHE": str(tmp_path / "cache"), "MADE_LOG": str(tmp_path / "made")}
    procs = [subprocess.Popen([sys.executable, "-c", INSTALL_ONCE], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    said = sorted(proc.communicate(timeout=60)[0].strip() for proc in procs)
    assert all(proc.returncode == 0 for proc in procs)
    assert said == ["installing 1.16.3", "waiting 1.16.3", "waiting 1.16.3"]
    assert len((tmp_path / "made").read_text().splitlines()) == 1


@pytest.mark.slow  # make, then graphfix under it, three times
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_repair_is_one_run_with_one_report_and_an_args_change_rebuilds(tmp_path):
    tree = make_tree(tmp_path / "models")
    out, report = tmp_path / "fixed", tmp_path / "report.json"
    script = Path(sys.executable).with_name("graphfix")

    def make(args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["make", "-s", "-C", str(ROOT), "repair", f"MODELS={tree}", f"OUT={out}",
                               f"REPORT={report}", f"GRAPHFIX={script}", f"ARGS={args}", "JOBS=2"],
                              capture_output=True, text=True, timeout=300)

    first = make("--no-validate")
    assert first.returncode != 0 and "graphfix exited 3" in first.stderr  # the bad folders fail the make
    assert json.loads(report.read_text())["summary"]["repaired"] == 2 and (out / "trocr").is_dir()
    shutil.rmtree(tree / "broken")
    shutil.rmtree(tree / "not-a-decoder")
    assert make("--no-validate").returncode == 0  # redone: the last run failed
    assert "graphfix repair" not in make("--no-validate").stdout  # up to date: nothing runs
    import onnx

    assert onnx.load(out / "group" / "marian" / "decoder_model_merged.onnx").opset_import[0].version == 21
    retarget = make("--no-validate --skip-target-load --target-ort 1.16")
    assert retarget.returncode == 0 and "graphfix repair" in retarget.stdout, retarget.stderr
    assert onnx.load(out / "group" / "marian" / "decoder_model_merged.onnx").opset_import[0].version <= 19
    assert json.loads(report.read_text())["exit_code"] == 0


def test_a_command_that_finds_the_install_under_way_says_it_waits_instead_of_installing(cli, tmp_path, monkeypatch):
    from graphfix.errors import BadInputError
    from graphfix.proof import runtimes

    monkeypatch.setenv("GRAPHFIX_CACHE", str(tmp_path / "cache"))
    home = runtimes.runtime_home("1.16.3")
    home.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | "
                               "os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); "
                               "sys.stdin.read()", str(home.parent / f".lock-{home.name}")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"

        def offline(version: str, **notices) -> Path:  # what waiting would end in is not this test's business
            raise BadInputError(f"cannot install onnxruntime=={version}: offline")

        monkeypatch.setattr(runtimes, "runtime_python", offline)
        lines = cli("validate", EXPORTS / "current-trocr" / "decoder_model_merged.onnx", "--ort-version",
                    "1.16").stderr.splitlines()
        assert lines[0] == f"waiting for another graphfix process installing onnxruntime 1.16.3 into {home}"
        assert not any(line.startswith("installing") for line in lines)
    finally:
        holder.communicate("")
