"""Run directories on a real filesystem, and a real process writing output into one."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from runyard.domain.models import Run
from runyard.engine import workspace as workspace_module
from runyard.engine.workspace import INPUT_CSV_ENV, INPUT_ENV, OUTPUT_DIR_ENV, Workspace

MIB = 1024 * 1024
MakeRun = Callable[..., Run]


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "work")


def test_environment_variable_names() -> None:
    assert (INPUT_ENV, INPUT_CSV_ENV, OUTPUT_DIR_ENV) == (
        "RUNYARD_INPUT",
        "RUNYARD_INPUT_CSV",
        "RUNYARD_OUTPUT_DIR",
    )


def test_prepare_without_input(workspace: Workspace, make_run: MakeRun) -> None:
    run = make_run()
    env = workspace.prepare(run)
    run_dir = workspace.path(run.id)
    assert env == {OUTPUT_DIR_ENV: str(run_dir / "output")}
    assert (run_dir / "output").is_dir()
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert sorted(path.name for path in run_dir.iterdir()) == ["output"]


def test_prepare_with_input(workspace: Workspace, make_run: MakeRun) -> None:
    tables = [[["name", "note"], ["Zoë", "a,b"]], [["second"]]]
    run = make_run(input_data=tables)
    env = workspace.prepare(run)
    run_dir = workspace.path(run.id)
    assert env == {
        OUTPUT_DIR_ENV: str(run_dir / "output"),
        INPUT_ENV: str(run_dir / "input.json"),
        INPUT_CSV_ENV: str(run_dir / "input.csv"),
    }
    raw_json = (run_dir / "input.json").read_bytes()
    assert "Zoë".encode() in raw_json  # ensure_ascii=False: no \\u escapes
    assert json.loads(raw_json) == tables
    assert (run_dir / "input.csv").read_bytes() == 'name,note\nZoë,"a,b"\n'.encode()


@pytest.mark.parametrize("tables", [[], [[]], [[], [["x"]]]], ids=["no-tables", "empty", "first"])
def test_prepare_writes_an_empty_csv_for_an_empty_first_table(
    workspace: Workspace, make_run: MakeRun, tables: list[list[list[str]]]
) -> None:
    run = make_run(input_data=tables)
    env = workspace.prepare(run)
    assert Path(env[INPUT_CSV_ENV]).read_bytes() == b""
    assert json.loads(Path(env[INPUT_ENV]).read_text(encoding="utf-8")) == tables


def test_paths_are_absolute_for_a_relative_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_run: MakeRun
) -> None:
    monkeypatch.chdir(tmp_path)
    run = make_run(input_data=[[["a"]]])
    env = Workspace(Path("data") / "work").prepare(run)
    monkeypatch.chdir("/")  # the process runs in the task's working_dir, not the daemon's
    assert all(Path(value).is_absolute() for value in env.values())
    run_dir = (tmp_path / "data" / "work" / run.id).resolve()
    assert Path(env[OUTPUT_DIR_ENV]).resolve() == run_dir / "output"
    assert Path(env[INPUT_CSV_ENV]).read_text(encoding="utf-8") == "a\n"


def test_prepare_starts_from_a_clean_directory(workspace: Workspace, make_run: MakeRun) -> None:
    run = make_run()
    stale = workspace.path(run.id) / "output"
    stale.mkdir(parents=True)
    (stale / "old.csv").write_text("left by a crashed daemon\n", encoding="utf-8")
    workspace.prepare(run)
    assert workspace.read_output(run.id, MIB) == ({}, [])


def test_prepare_raises_oserror(tmp_path: Path, make_run: MakeRun) -> None:
    (tmp_path / "work").write_text("a file where the root should be", encoding="utf-8")
    with pytest.raises(OSError):
        Workspace(tmp_path / "work").prepare(make_run())


@pytest.mark.parametrize("run_id", ["", ".", "..", "../x", "a/b", "a\0b"])
def test_path_refuses_ids_that_leave_the_root(workspace: Workspace, run_id: str) -> None:
    with pytest.raises(ValueError):
        workspace.path(run_id)


SCRIPT = textwrap.dedent(
    """
    import csv, json, os
    from runyard import output

    with open(os.environ["RUNYARD_INPUT_CSV"], newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    with open(os.environ["RUNYARD_INPUT"], encoding="utf-8") as file:
        tables = json.load(file)
    for row in rows:
        output.append("upper", [cell.upper() for cell in row])
    output.write("count", [["tables", len(tables)]])
    with open(os.path.join(os.environ["RUNYARD_OUTPUT_DIR"], "raw.jsonl"), "w") as file:
        file.write(json.dumps(["from", "jsonl", 1.0]) + "\\n")
    """
)


def test_a_real_process_reads_input_and_writes_output(
    workspace: Workspace, make_run: MakeRun, tmp_path: Path
) -> None:
    run = make_run(input_data=[[["a", "b"], ["c", "d"]], [["other"]]])
    env = {**os.environ, **workspace.prepare(run)}
    # Run elsewhere: the process must find everything through the environment.
    subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path, check=True)
    data, notes = workspace.read_output(run.id, MIB)
    assert data == {
        "upper": [["A", "B"], ["C", "D"]],
        "count": [["tables", "2"]],
        "raw": [["from", "jsonl", "1"]],
    }
    assert notes == []


def test_read_output_of_a_missing_run(workspace: Workspace) -> None:
    assert workspace.read_output("never-prepared", MIB) == ({}, [])


def _prepared_output(workspace: Workspace, make_run: MakeRun) -> tuple[Run, Path]:
    run = make_run()
    workspace.prepare(run)
    return run, workspace.path(run.id) / "output"


def test_read_output_notes_what_it_does_not_read(
    workspace: Workspace, make_run: MakeRun, tmp_path: Path
) -> None:
    run, output = _prepared_output(workspace, make_run)
    secret = tmp_path / "secret.csv"
    secret.write_text("password\n", encoding="utf-8")
    (output / "link.csv").symlink_to(secret)
    (output / "sub.csv").mkdir()
    (output / "sub.csv" / "inner.csv").write_text("x\n", encoding="utf-8")
    os.mkfifo(output / "pipe.csv")  # opening it for reading would block forever
    (output / ".sheet.csv.99.tmp").write_text("half a row", encoding="utf-8")
    (output / "notes.txt").write_text("hello", encoding="utf-8")
    (output / "good.csv").write_text("ok\n", encoding="utf-8")
    data, notes = workspace.read_output(run.id, MIB)
    assert data == {"good": [["ok"]]}
    assert notes == [
        "Ignored output file link.csv: symbolic links are not read.",
        "Ignored output file pipe.csv: not a regular file.",
        "Ignored output directory sub.csv: subdirectories are not read.",
        "Ignored output file notes.txt: only .csv, .tsv, .json and .jsonl files are read.",
    ]


def test_read_output_caps_size_without_reading_whole_files(
    workspace: Workspace, make_run: MakeRun
) -> None:
    run, output = _prepared_output(workspace, make_run)
    with (output / "huge.csv").open("wb") as file:
        file.truncate(4 * 1024 * MIB)  # sparse: 4 GiB that would not fit in memory if read
    (output / "small.csv").write_text("fits\n", encoding="utf-8")
    data, notes = workspace.read_output(run.id, 10 * MIB)
    assert data == {"small": [["fits"]]}
    assert notes == ["Ignored output file huge.csv: output data is capped at 10.0 MiB per run."]


def test_read_output_turns_read_errors_into_notes(
    workspace: Workspace, make_run: MakeRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, output = _prepared_output(workspace, make_run)
    (output / "locked.csv").write_text("x\n", encoding="utf-8")
    (output / "open.csv").write_text("y\n", encoding="utf-8")
    real_read = workspace_module._read_regular_file

    def failing_read(path: str, limit: int) -> bytes | None:
        if path.endswith("locked.csv"):
            raise PermissionError(13, "Permission denied")
        return real_read(path, limit)

    # Root reads any file whatever its mode, so the failure is simulated.
    monkeypatch.setattr(workspace_module, "_read_regular_file", failing_read)
    data, notes = workspace.read_output(run.id, MIB)
    assert data == {"open": [["y"]]}
    assert notes == ["Ignored output file locked.csv: could not be read (Permission denied)."]


def test_read_output_survives_undecodable_file_names(
    workspace: Workspace, make_run: MakeRun
) -> None:
    run, output = _prepared_output(workspace, make_run)
    with open(os.path.join(os.fsencode(output), b"bad\xff.csv"), "wb") as file:
        file.write(b"x\n")
    data, notes = workspace.read_output(run.id, MIB)
    assert data == {}
    assert len(notes) == 1
    assert notes[0].startswith("Ignored output file bad\ufffd.csv: invalid token name")
    notes[0].encode("utf-8")  # storable: no lone surrogates


def test_read_output_while_a_file_is_being_replaced(
    workspace: Workspace, make_run: MakeRun
) -> None:
    run, output = _prepared_output(workspace, make_run)
    (output / "sheet.csv").write_text("v1\n", encoding="utf-8")
    (output / ".sheet.csv.1234.tmp").write_text("v2 half", encoding="utf-8")
    assert workspace.read_output(run.id, MIB) == ({"sheet": [["v1"]]}, [])


def test_remove(workspace: Workspace, make_run: MakeRun) -> None:
    run, output = _prepared_output(workspace, make_run)
    (output / "a.csv").write_text("x\n", encoding="utf-8")
    workspace.remove(run.id)
    assert not workspace.path(run.id).exists()
    workspace.remove(run.id)  # already gone: fine
    workspace.remove("never-existed")


def test_remove_read_only_directories(workspace: Workspace, make_run: MakeRun) -> None:
    run, output = _prepared_output(workspace, make_run)
    # Like Go's module cache: read-only directories, which rmtree alone cannot empty.
    locked = output / "cache" / "mod"
    locked.mkdir(parents=True)
    (locked / "file").write_text("x", encoding="utf-8")
    locked.chmod(0o500)
    (output / "cache").chmod(0o500)
    unlistable = output / "hidden"
    unlistable.mkdir()
    (unlistable / "file").write_text("x", encoding="utf-8")
    unlistable.chmod(0)
    workspace.remove(run.id)
    assert not workspace.path(run.id).exists()


def test_remove_does_not_follow_symlinks(
    workspace: Workspace, make_run: MakeRun, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep", encoding="utf-8")
    run, output = _prepared_output(workspace, make_run)
    (output / "link").symlink_to(outside)
    workspace.remove(run.id)
    assert not workspace.path(run.id).exists()
    assert (outside / "keep.txt").read_text(encoding="utf-8") == "keep"


def test_remove_except(workspace: Workspace, make_run: MakeRun) -> None:
    runs = [make_run() for _ in range(3)]
    for run in runs:
        workspace.prepare(run)
    stray_file = workspace.root / "not-a-run-dir.txt"
    stray_file.write_text("x", encoding="utf-8")
    workspace.remove_except({runs[1].id, "not-present"})
    assert sorted(path.name for path in workspace.root.iterdir()) == sorted(
        [runs[1].id, stray_file.name]
    )


def test_remove_except_without_a_root(tmp_path: Path) -> None:
    Workspace(tmp_path / "missing").remove_except(set())
    assert not (tmp_path / "missing").exists()


# ----- spare directories ------------------------------------------------------------


def test_fill_spares_makes_empty_run_directories(workspace: Workspace) -> None:
    assert workspace.needs_spares
    workspace.fill_spares()
    assert not workspace.needs_spares
    spares = sorted(workspace.root.iterdir())
    assert len(spares) == workspace_module.SPARES
    for spare in spares:
        assert spare.name.startswith(workspace_module.SPARE_PREFIX)
        assert [path.name for path in spare.iterdir()] == ["output"]
        assert stat.S_IMODE(spare.stat().st_mode) == 0o700


def test_a_run_without_input_gets_a_spare_and_gives_it_back_unused(
    workspace: Workspace, make_run: MakeRun
) -> None:
    workspace.fill_spares()
    before = set(workspace.root.iterdir())
    run = make_run()
    env = workspace.prepare(run)
    run_dir = workspace.path(run.id)
    assert run_dir in before  # no directory was made for it
    assert env == {OUTPUT_DIR_ENV: str(run_dir / "output")}
    assert workspace.recycle(run.id) is True
    # Back among the spares, and no longer the run's.
    assert set(workspace.root.iterdir()) == before
    assert workspace.path(run.id) == workspace.root / run.id
    assert workspace.read_output(run.id, MIB) == ({}, [])


@pytest.mark.parametrize(
    "leftover",
    ["output/sheet.csv", "stray.txt", "output/.tmp"],
    ids=["output", "beside-output", "hidden-temp-file"],
)
def test_a_run_that_wrote_anything_is_not_recycled(
    workspace: Workspace, make_run: MakeRun, leftover: str
) -> None:
    workspace.fill_spares()
    run = make_run()
    workspace.prepare(run)
    run_dir = workspace.path(run.id)
    (run_dir / leftover).write_text("a\n", encoding="utf-8")
    assert workspace.recycle(run.id) is False
    if leftover == "output/sheet.csv":
        assert workspace.read_output(run.id, MIB) == ({"sheet": [["a"]]}, [])
    workspace.remove(run.id)
    assert not run_dir.exists()
    # A later run never sees that directory.
    later = make_run()
    workspace.prepare(later)
    assert workspace.path(later.id) != run_dir
    assert workspace.read_output(later.id, MIB) == ({}, [])


def test_a_run_with_input_gets_its_own_directory(workspace: Workspace, make_run: MakeRun) -> None:
    workspace.fill_spares()
    run = make_run(input_data=[[["a"]]])
    workspace.prepare(run)
    assert workspace.path(run.id) == workspace.root / run.id
    assert workspace.recycle(run.id) is False  # input files are there: read, then removed


def test_remove_except_forgets_the_spares_it_deleted(
    workspace: Workspace, make_run: MakeRun
) -> None:
    workspace.fill_spares()
    workspace.remove_except(())
    assert list(workspace.root.iterdir()) == []
    assert workspace.needs_spares
    run = make_run()
    env = workspace.prepare(run)  # no spare left: a directory of its own
    assert Path(env[OUTPUT_DIR_ENV]).is_dir()
    assert workspace.path(run.id) == workspace.root / run.id
