"""Translate a crontab into runyard tasks that do what cron would have done.

What cron (Debian's, and vixie cron's descendants) gives a job, and how each
part becomes a task key:
- the schedule: five fields or an `@daily`-style alias -> `cron` (runyard
  reads both the same way); `@reboot` -> `run_on_start = true`;
- the environment: only HOME, LOGNAME, SHELL and PATH (`/usr/bin:/bin`), plus
  the crontab's `NAME=value` lines above the job -> `env_base = "clean"` and
  `env`; `SHELL=` also picks the shell (`shell`); `CRON_TZ=` the time zone
  the schedule is read in (`timezone`);
- the working directory: the job's HOME -> `working_dir`;
- the command: run by `$SHELL -c`, with `%` turned into newlines and what
  follows the first `%` fed to its standard input -> `run` (the input as a
  here-document); runyard runs a task's script with `-e`, cron does not, so
  a command that lists several commands starts with `set +e`;
- the comment lines right above a job -> `description`.
Nothing is dropped silently: a line that cannot be translated (a bad
schedule, a `MAILTO` runyard cannot honour, another user's job) is returned
with the reason.

Pure: the caller reads the files and says whose home is where.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from runyard.domain.models import TASK_NAME_RE
from runyard.domain.schedule import ScheduleError, parse_schedule
from runyard.importers.common import Imported, Skipped, unique_name

# The variables cron sets for every job before the crontab's own lines.
CRON_PATH = "/usr/bin:/bin"
CRON_SHELL = "/bin/sh"

_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_ENV_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
# Words that say how a command runs rather than what it is: passed over when
# naming the task after its command.
_WRAPPERS = frozenset(
    {"cd", "test", "[", "nice", "ionice", "env", "exec", "sudo", "timeout", "flock", "chronic",
     "if", "time", "then", "{", "(", "nohup", "sh", "bash", "-c", "&&", "||", ";"}
)  # fmt: skip
# Anything in a command that makes it more than one simple command, where
# `sh -e` and cron's `sh` would part ways.
_COMPOUND = re.compile(r"[;\n(`{]|\$\(")
_STDIN_END = "CRON_STDIN"
_MAX_DESCRIPTION_LINES = 3
# A commented-out job or an environment line, not words about the job below.
_COMMENTED_JOB = re.compile(r"^([\d*@]|[A-Za-z_][A-Za-z0-9_]*\s*=)")


# The result of import_crontab.
CronImport = Imported


@dataclass
class _Environment:
    variables: dict[str, str]
    shell: str = CRON_SHELL
    timezone: str | None = None


def import_crontab(
    text: str,
    *,
    system: bool,
    user: str,
    home_of: Callable[[str], str | None],
    name_prefix: str = "",
    timezone: str = "UTC",
) -> CronImport:
    """Translate crontab `text`.

    `system`: the file has a user field after the schedule (`/etc/crontab`,
    `/etc/cron.d/*`). `user`: who runs the daemon (and, for a user crontab,
    whose crontab it is): a job of another user becomes a task with `user`
    when the daemon runs as root, and is skipped otherwise, since only root can
    switch users. `home_of(name)` is that user's home directory.
    `name_prefix` starts every task name (e.g. the cron.d file's name).
    `timezone` is the zone schedules are checked in when the crontab sets none.
    """
    result = CronImport()
    env = _Environment(variables={})
    comments: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            comments = []
            continue
        if line.startswith("#"):
            comments.append(line.lstrip("#").strip())
            continue
        described = _description(comments)
        comments = []
        assignment = _ENV_LINE.match(raw)
        if assignment:
            problem = _set_variable(env, assignment.group(1), _unquote(assignment.group(2)))
            if problem:
                result.skipped.append(Skipped(number, raw, problem))
            continue
        parsed = _parse_job(line, system)
        if isinstance(parsed, str):
            result.skipped.append(Skipped(number, raw, parsed))
            continue
        schedule, job_user, command = parsed
        job_user = job_user or user
        if job_user != user and user != "root":
            result.skipped.append(
                Skipped(
                    number,
                    raw,
                    f"runs as {job_user}; a task runs as another user than the daemon's "
                    f"({user}) only when the daemon runs as root: import it there, "
                    f"or where the daemon runs as {job_user}",
                )
            )
            continue
        task = _task(schedule, command, described, env, job_user, home_of, timezone)
        if isinstance(task, str):
            result.skipped.append(Skipped(number, raw, task))
            continue
        if job_user != user:
            task["user"] = job_user  # the daemon (root) drops to them, as cron does
        base = _sanitise(name_prefix) if name_prefix else _command_word(command)
        result.add(unique_name(result.tasks, base), task, number, raw)
    return result


def _description(comments: list[str]) -> str:
    """The comment right above a job, when it reads as one: up to three lines.

    A longer block is a file's preamble or a template (Debian's /etc/crontab
    draws the five fields above its first job), not a word about this job.
    """
    kept = [line for line in comments if line and not _COMMENTED_JOB.match(line)]
    if not kept or len(comments) > _MAX_DESCRIPTION_LINES:
        return ""
    return " ".join(kept)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _set_variable(env: _Environment, name: str, value: str) -> str | None:
    """Apply one `NAME=value` line to the jobs below it; a reason when runyard cannot."""
    if name == "MAILTO":
        # Cron passes it to the job like any variable; the job sees it either way.
        env.variables[name] = value
        if value:
            return (
                "MAILTO: kept in the jobs' environment, but runyard does not mail a "
                "job's output; every run's output is kept in its log (runyard logs RUN_ID)"
            )
        return None  # MAILTO="" asks for no mail: nothing more to do
    if name == "CRON_TZ":
        env.timezone = value or None
        return None
    if name == "SHELL":
        env.shell = value or CRON_SHELL
    env.variables[name] = value
    return None


def _parse_job(line: str, system: bool) -> tuple[str, str | None, str] | str:
    """Return (schedule, user or None, command), or why the line is not a job."""
    if line.startswith("@"):
        word, _, rest = line.partition(" ")
        word = word.lower()
        fields = [word]
        if word != "@reboot" and word not in _ALIASES:
            return f"unknown schedule {word}"
    else:
        parts = line.split(None, 5)
        if len(parts) < 6:
            return "expected five schedule fields and a command"
        fields = [" ".join(parts[:5])]
        rest = parts[5]
    rest = rest.strip()
    job_user: str | None = None
    if system:
        words = rest.split(None, 1)
        job_user = words[0] if words else ""
        rest = words[1].strip() if len(words) > 1 else ""
    if not rest:
        return "no command after the schedule" + (" and user" if system else "")
    return fields[0], job_user, rest


def _task(
    schedule: str,
    command: str,
    description: str,
    env: _Environment,
    user: str,
    home_of: Callable[[str], str | None],
    default_timezone: str,
) -> dict[str, object] | str:
    """The task keys of one job, or why it cannot be one."""
    task: dict[str, object] = {}
    if description:
        task["description"] = description
    if schedule == "@reboot":
        task["run_on_start"] = True
    else:
        try:
            parse_schedule(schedule, env.timezone or default_timezone)
        except ScheduleError as error:
            return f"schedule {schedule!r}: {error}"
        task["cron"] = schedule
        if env.timezone:
            task["timezone"] = env.timezone
    script, stdin = _split_percent(command)
    task["run"] = _script(script, stdin)
    task["shell"] = env.shell
    home = env.variables.get("HOME") or home_of(user)
    if home is None:
        return f"user {user} has no home directory, where cron would run the job"
    task["working_dir"] = home
    task["env_base"] = "clean"
    variables = {"HOME": home, "LOGNAME": user, "PATH": CRON_PATH, "SHELL": CRON_SHELL}
    variables.update(env.variables)
    task["env"] = dict(sorted(variables.items()))
    return task


def _split_percent(command: str) -> tuple[str, list[str] | None]:
    r"""Split at the first unescaped `%`: (the command, its input lines or None).

    `\%` is a literal `%`; every other `%` ends a line (cron's rules).
    """
    pieces: list[str] = [""]
    index = 0
    while index < len(command):
        char = command[index]
        if char == "\\" and command[index + 1 : index + 2] == "%":
            pieces[-1] += "%"
            index += 2
            continue
        if char == "%":
            pieces.append("")
        else:
            pieces[-1] += char
        index += 1
    if len(pieces) == 1:
        return pieces[0], None
    return pieces[0], pieces[1:]


def _script(command: str, stdin: list[str] | None) -> str:
    """The task's `run`: the command, its input as a here-document, `set +e` when it matters."""
    compound = bool(_COMPOUND.search(command))
    if stdin is None:
        return f"set +e\n{command}" if compound else command
    end = _STDIN_END
    while end in stdin:
        end += "_"
    # cron ends the input with a newline; a here-document does the same.
    body = "\n".join(stdin)
    return f"set +e\n{{\n{command}\n}} <<'{end}'\n{body}\n{end}"


def _command_word(command: str) -> str:
    previous = ""
    for word in re.split(r"[\s;&|(){}]+", command):
        after_cd, previous = previous == "cd", word
        if not word or word in _WRAPPERS or word.startswith("-") or "=" in word:
            continue
        if after_cd or word.isdigit():
            continue
        candidate = _sanitise(word.rsplit("/", 1)[-1].split(".", 1)[0])
        if candidate != "cron":
            return candidate
    return "cron"


def _sanitise(word: str) -> str:
    cleaned = re.sub(r"[^a-zA-Z0-9._-]+", "-", word).strip("-.")[:60] or "cron"
    return cleaned if TASK_NAME_RE.fullmatch(cleaned) else "cron"
