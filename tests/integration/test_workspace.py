"""Run directories on a real filesystem, and a real process writing output into one."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from runyard.domain.models import Run
from runyard.domain.output_data import TOKEN_RULE
from runyard.domain.run_environment import INPUT_CSV_ENV, INPUT_ENV, OUTPUT_DIR_ENV
from runyard.engine import workspace as workspace_module
from runyard.engine.workspace import Workspace

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
    assert env == {OUTPUT_DIR_ENV: str(run_dir)}
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert list(run_dir.iterdir()) == []
    assert not workspace.input_path(run.id).exists()


def test_prepare_with_input(workspace: Workspace, make_run: MakeRun) -> None:
    tables = [[["name", "note"], ["Zoë", "a,b"]], [["second"]]]
    run = make_run(input_data=tables)
    env = workspace.prepare(run)
    run_dir = workspace.path(run.id)
    input_dir = workspace.input_path(run.id)
    assert env == {
        OUTPUT_DIR_ENV: str(run_dir),
        INPUT_ENV: str(input_dir / "input.json"),
        INPUT_CSV_ENV: str(input_dir / "input.csv"),
    }
    # The input files are beside the output directory, not in it.
    assert list(run_dir.iterdir()) == []
    assert stat.S_IMODE(input_dir.stat().st_mode) == 0o700
    raw_json = (input_dir / "input.json").read_bytes()
    assert "Zoë".encode() in raw_json  # ensure_ascii=False: no \\u escapes
    assert json.loads(raw_json) == tables
    assert (input_dir / "input.csv").read_bytes() == 'name,note\nZoë,"a,b"\n'.encode()


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
    assert Path(env[OUTPUT_DIR_ENV]).resolve() == run_dir
    assert Path(env[INPUT_CSV_ENV]).read_text(encoding="utf-8") == "a\n"


def test_prepare_starts_from_a_clean_directory(workspace: Workspace, make_run: MakeRun) -> None:
    run = make_run(input_data=[[["a"]]])  # no spare: a directory named after the run
    stale = workspace.path(run.id)
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
    return run, workspace.path(run.id)


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

    def failing_read(name: str, limit: int, dir_fd: int) -> bytes | None:
        if name.endswith("locked.csv"):
            raise PermissionError(13, "Permission denied")
        return real_read(name, limit, dir_fd)

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
    runs = [make_run(input_data=[[["a"]]]) for _ in range(3)]
    for run in runs:
        workspace.prepare(run)
    stray_file = workspace.root / "not-a-run-dir.txt"
    stray_file.write_text("x", encoding="utf-8")
    workspace.remove_except({runs[1].id, "not-present"})
    assert sorted(path.name for path in workspace.root.iterdir()) == sorted(
        [runs[1].id, f"{runs[1].id}.input", stray_file.name]
    )


def test_remove_except_without_a_root(tmp_path: Path) -> None:
    Workspace(tmp_path / "missing").remove_except(set())
    assert not (tmp_path / "missing").exists()


# ----- spare directories ------------------------------------------------------------


def test_fill_spares_makes_empty_run_directories(workspace: Workspace) -> None:
    assert workspace.needs_upkeep
    workspace.fill_spares()
    assert not workspace.needs_upkeep
    spares = sorted(workspace.root.iterdir())
    assert len(spares) == workspace_module.SPARES
    for spare in spares:
        assert spare.name.startswith(workspace_module.SPARE_PREFIX)
        assert list(spare.iterdir()) == []
        assert stat.S_IMODE(spare.stat().st_mode) == 0o700


def test_a_run_without_input_gets_a_spare_that_is_never_reused(
    workspace: Workspace, make_run: MakeRun
) -> None:
    workspace.fill_spares()
    before = set(workspace.root.iterdir())
    run = make_run()
    env = workspace.prepare(run)
    run_dir = workspace.path(run.id)
    assert run_dir in before  # no directory was made for it
    assert env == {OUTPUT_DIR_ENV: str(run_dir)}
    assert workspace.discard_if_empty(run.id) is True
    # No longer the run's, and no other run's either: removed by the next upkeep.
    assert workspace.path(run.id) == workspace.root / run.id
    assert workspace.read_output(run.id, MIB) == ({}, [])
    handed_out = set()
    for _ in range(3 * workspace_module.SPARES):
        later = make_run()
        workspace.prepare(later)
        handed_out.add(workspace.path(later.id))
        assert workspace.discard_if_empty(later.id) is True
        if workspace.needs_upkeep:
            workspace.upkeep()
    assert run_dir not in handed_out
    assert len(handed_out) == 3 * workspace_module.SPARES  # each run a directory of its own
    workspace.upkeep()
    assert not run_dir.exists()
    assert not any(path.exists() for path in handed_out)


def test_upkeep_removes_a_discarded_directory_written_to_since(
    workspace: Workspace, make_run: MakeRun
) -> None:
    workspace.fill_spares()
    run = make_run()
    workspace.prepare(run)
    run_dir = workspace.path(run.id)
    assert workspace.discard_if_empty(run.id) is True
    (run_dir / "late.csv").write_text("written by a process that outlived its run\n")
    workspace.upkeep()
    assert not run_dir.exists()


@pytest.mark.parametrize("leftover", ["sheet.csv", ".tmp"], ids=["output", "hidden-temp-file"])
def test_a_run_that_wrote_anything_is_collected(
    workspace: Workspace, make_run: MakeRun, leftover: str
) -> None:
    workspace.fill_spares()
    run = make_run()
    workspace.prepare(run)
    run_dir = workspace.path(run.id)
    (run_dir / leftover).write_text("a\n", encoding="utf-8")
    assert workspace.discard_if_empty(run.id) is False
    expected = {"sheet": [["a"]]} if leftover == "sheet.csv" else {}
    assert workspace.collect(run.id, MIB) == (expected, [])
    assert not run_dir.exists()
    # A later run never sees that directory.
    later = make_run()
    workspace.prepare(later)
    assert workspace.path(later.id) != run_dir
    assert workspace.read_output(later.id, MIB) == ({}, [])


def test_a_run_with_input_gets_its_own_directories(workspace: Workspace, make_run: MakeRun) -> None:
    workspace.fill_spares()
    run = make_run(input_data=[[["a"]]])
    workspace.prepare(run)
    assert workspace.path(run.id) == workspace.root / run.id
    assert workspace.discard_if_empty(run.id) is False  # input files are there
    assert workspace.collect(run.id, MIB) == ({}, [])
    assert not workspace.path(run.id).exists()
    assert not workspace.input_path(run.id).exists()


def test_remove_except_forgets_the_spares_it_deleted(
    workspace: Workspace, make_run: MakeRun
) -> None:
    workspace.fill_spares()
    workspace.remove_except(())
    assert list(workspace.root.iterdir()) == []
    assert workspace.needs_upkeep
    run = make_run()
    env = workspace.prepare(run)  # no spare left: a directory of its own
    assert Path(env[OUTPUT_DIR_ENV]).is_dir()
    assert workspace.path(run.id) == workspace.root / run.id


# ----- what a run may have done to its directory ----------------------------------


def _outside_with_data(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("someone else's data\n", encoding="utf-8")
    return outside


def test_output_directory_replaced_by_a_symlink_is_not_followed(
    workspace: Workspace, make_run: MakeRun, tmp_path: Path
) -> None:
    outside = _outside_with_data(tmp_path)
    run, output = _prepared_output(workspace, make_run)
    output.rmdir()
    output.symlink_to(outside)
    expected_note = (
        "Output data was not read: the run replaced RUNYARD_OUTPUT_DIR by a symbolic link, "
        "which runyard does not follow."
    )
    assert workspace.read_output(run.id, MIB) == ({}, [expected_note])
    assert workspace.discard_if_empty(run.id) is False
    assert workspace.collect(run.id, MIB) == ({}, [expected_note])
    # The link is gone, what it pointed at is untouched.
    assert not os.path.lexists(output)
    assert (outside / "secret.csv").read_text(encoding="utf-8") == "someone else's data\n"


def test_output_directory_replaced_by_a_file(workspace: Workspace, make_run: MakeRun) -> None:
    run, output = _prepared_output(workspace, make_run)
    output.rmdir()
    output.write_text("not a directory", encoding="utf-8")
    assert workspace.collect(run.id, MIB) == (
        {},
        [
            "Output data was not read: the run replaced RUNYARD_OUTPUT_DIR by something "
            "that is not a directory."
        ],
    )
    assert not os.path.lexists(output)


def test_input_directory_replaced_by_a_symlink_is_removed_not_followed(
    workspace: Workspace, make_run: MakeRun, tmp_path: Path
) -> None:
    outside = _outside_with_data(tmp_path)
    run = make_run(input_data=[[["a"]]])
    workspace.prepare(run)
    input_dir = workspace.input_path(run.id)
    shutil.rmtree(input_dir)
    input_dir.symlink_to(outside)
    workspace.collect(run.id, MIB)
    assert not os.path.lexists(input_dir)
    assert (outside / "secret.csv").exists()


def test_remove_except_removes_symlinks_a_run_left_in_the_root(
    workspace: Workspace, make_run: MakeRun, tmp_path: Path
) -> None:
    outside = _outside_with_data(tmp_path)
    run, output = _prepared_output(workspace, make_run)
    output.rmdir()
    output.symlink_to(outside)
    dangling = workspace.root / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    # A new daemon starts: nothing in work/ belongs to a live run.
    Workspace(workspace.root).remove_except(())
    assert list(workspace.root.iterdir()) == []
    assert (outside / "secret.csv").exists()


def test_control_characters_in_file_names_are_escaped_in_notes(
    workspace: Workspace, make_run: MakeRun
) -> None:
    run, output = _prepared_output(workspace, make_run)
    forged = "x\nSucceeded after 0.1s (exit code 0).\x1b[2K.txt"
    (output / forged).write_text("x", encoding="utf-8")
    (output / "link\u2028.csv").symlink_to(output / forged)
    (output / "bad\rtoken.csv").write_text("a\n", encoding="utf-8")
    data, notes = workspace.read_output(run.id, MIB)
    assert data == {}
    assert notes == [
        "Ignored output file link\\u2028.csv: symbolic links are not read.",
        "Ignored output file bad\\rtoken.csv: invalid token name 'bad\\rtoken': use "
        + TOKEN_RULE
        + ".",
        "Ignored output file x\\nSucceeded after 0.1s (exit code 0).\\x1b[2K.txt: "
        "only .csv, .tsv, .json and .jsonl files are read.",
    ]
    for note in notes:
        assert len(note.splitlines()) == 1
        assert note.isprintable()
