"""Run a stage flow from the command line: `python -m flows.<stage> [--params params.yaml] [--debug]`.

What a person at the terminal gets, whatever the stage:
- a user error (bad input, params or models) prints one line, `error: <what and how to fix it>`, and
  exits 1; Prefect's failure records and the traceback go to `<paths.run>/logs/<stage>.log` (and to
  the Prefect UI), or to the terminal with --debug or MVCAUG_DEBUG=1. A file missing among another stage's
  outputs (dvc.yaml) is a user error too, naming the stage to run first. Any other exception is a bug and
  is shown in full;
- Ctrl-C exits within seconds (the Prefect server lives in its own session: flows/api_server.py);
- a stage refuses to start while another process runs the same stage (same outputs) in this project;
- when the stage process's parent dies (`kill -9` of `dvc repro`), the stage stops too, so no orphan
  keeps writing while a rerun starts;
- each finished run records its wall time in `<paths.run>/stage-times.json` (the report's "where the
  time went" table).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

from flows.api_server import die_with_parent, prefect_api
from mvcaug.core.errors import MissingInputError, UserError
from mvcaug.io.locks import exclusive_lock, lock_holder
from mvcaug.io.params_file import load_params
from mvcaug.io.catalog import FILES

__all__ = ["run_stage", "error_line", "missing_input", "user_errors_as_one_line"]

log = logging.getLogger("mvcaug.stage")
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
"""Prefect's run loggers, whose ERROR records repeat a failure's traceback once per task and flow."""
FAILED_STATES = ("Finished in state Failed", "Finished in state Crashed")
"""Their INFO records that repeat the failure's message once more."""


class StageBusy(UserError, RuntimeError):
    """Another process runs this stage (and writes its outputs) right now."""


class HoldRunFailures(logging.Filter):
    """Holds Prefect's failure records back from the terminal: shown after a bug, filed after a user error."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        failure = record.levelno >= logging.ERROR or record.getMessage().startswith(FAILED_STATES)
        if failure and record.name.startswith(RUN_LOGGERS):
            self.held.append(record)
            return False
        return True


def console_handlers() -> list[logging.Handler]:
    """The handlers that write to the terminal (Prefect puts its console handler on the root logger)."""
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)
            and not isinstance(h, logging.FileHandler)]


LOG_FILE_ONLY = logging.getLogger("mvcaug.stage.logfile")
"""What goes to the stage's log file alone (a user error's traceback and Prefect's records of it)."""
LOG_FILE_ONLY.propagate = False


@contextlib.contextmanager
def stage_log(log_file: Path, debug: bool) -> Iterator[HoldRunFailures]:
    """Everything the stage logs also goes to log_file; without debug, run-failure records are held back."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(log_file, mode="w")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(file_handler)
    LOG_FILE_ONLY.addHandler(file_handler)
    hold = HoldRunFailures()
    consoles = [] if debug else console_handlers()
    for handler in consoles:
        handler.addFilter(hold)
    try:
        yield hold
    finally:
        for handler in consoles:
            handler.removeFilter(hold)
        root.removeHandler(file_handler)
        LOG_FILE_ONLY.removeHandler(file_handler)
        file_handler.close()


@contextlib.contextmanager
def recorded_time(times_file: Path, stage: str) -> Iterator[None]:
    """Record the stage's wall time (since the process started, imports and server included) when it
    finishes without error; its tasks add their throughput meanwhile (mvcaug.io.stage_times)."""
    from mvcaug.io.stage_times import STAGE_VARIABLE, process_seconds, record_stage_time, start_stage_record

    start = time.perf_counter()
    os.environ[STAGE_VARIABLE] = stage  # the tasks (and Dask workers) record their throughput under it
    start_stage_record(times_file, stage)
    yield
    record_stage_time(times_file, stage, process_seconds() or time.perf_counter() - start)


def stage_name(flow: Callable[..., object]) -> str:
    """The DVC stage running us (DVC_STAGE), else the `flows.<stage>` module run with -m, else the flow's name."""
    if os.environ.get("DVC_STAGE"):
        return os.environ["DVC_STAGE"]
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if main_spec is not None and main_spec.name.startswith("flows."):
        return main_spec.name.removeprefix("flows.")
    return getattr(flow, "name", getattr(flow, "__name__", "stage"))


class Terminated(BaseException):
    """SIGTERM arrived (from PR_SET_PDEATHSIG or `kill`): unwind like Ctrl-C."""


GRACE_S = 5.0
"""After Ctrl-C or SIGTERM the stage unwinds (Prefect marks the run crashed, the lock and the server go);
if it has not exited after this long (a task-runner thread still computing a shard holds it), it leaves anyway."""


def leave_after_grace(message: str, code: int) -> None:
    """A daemon thread that ends the process GRACE_S seconds from now, unless it has exited by then."""
    def leave() -> None:
        time.sleep(GRACE_S)
        exit_now(message, code)

    threading.Thread(target=leave, name="leave-after-grace", daemon=True).start()


def on_interrupt(signum: int, frame: object) -> None:
    leave_after_grace("interrupted", 130)
    raise KeyboardInterrupt


def on_terminate(signum: int, frame: object) -> None:
    leave_after_grace("terminated", 143)
    raise Terminated


def exit_on_signals() -> None:
    """Ctrl-C and SIGTERM unwind like exceptions, so temp files, the lock and the server go, within seconds."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job keeps ignoring Ctrl-C
        signal.signal(signal.SIGINT, on_interrupt)
    signal.signal(signal.SIGTERM, on_terminate)


def exit_now(message: str, code: int) -> None:
    """Leave at once, without waiting for task-runner threads still computing a shard (the interpreter
    would join them at exit, for minutes): the lock and the server were released while unwinding, and a
    shard interrupted midway only leaves a temporary folder that the next run removes."""
    print(message, file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(code)


def run_stage(flow: Callable[..., object]) -> None:
    """Parse --params/--debug and run the flow as described in this module's docstring."""
    parser = argparse.ArgumentParser(description=flow.__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--debug", action="store_true", help="show Prefect's failure records and tracebacks")
    args = parser.parse_args()
    debug = args.debug or os.environ.get("MVCAUG_DEBUG", "") not in ("", "0")
    stage = stage_name(flow)
    die_with_parent()
    if os.getppid() == 1:  # the parent died before the request took effect
        sys.exit(f"error: {stage}: the process that started this stage has exited; not running")
    exit_on_signals()
    try:
        run_dir = Path(load_params(args.params).paths.run)
    except UserError as err:
        sys.exit(error_line(err))
    lock_file, log_file = run_dir / FILES.locks / f"{stage}.lock", run_dir / FILES.logs / f"{stage}.log"
    with stage_log(log_file, debug) as hold:
        try:
            with exclusive_lock(lock_file) as held:
                if not held:
                    raise StageBusy(f"stage '{stage}' is already running here (pid {lock_holder(lock_file)}) and "
                                    "writes the same outputs; wait for it to finish or stop it, then rerun")
                with prefect_api(), recorded_time(run_dir / FILES.stage_times, stage):
                    flow(params_file=args.params)
        except UserError as err:
            exit_with_one_line(err, err, hold)
        except FileNotFoundError as err:
            missing = missing_input(err, stage)
            if missing is None:  # not a file an earlier stage writes: a bug
                show_held(hold)
                raise
            exit_with_one_line(missing, err, hold)
        except KeyboardInterrupt:
            exit_now(f"{stage}: interrupted", 130)
        except Terminated:
            exit_now(f"{stage}: terminated (its parent process ended, or it was killed)", 143)
        except Exception:
            show_held(hold)
            raise


def exit_with_one_line(err: UserError, cause: BaseException, hold: HoldRunFailures) -> None:
    """A user error: its traceback (of `cause`) and Prefect's failure records to the log file, one line to the
    terminal, exit 1."""
    LOG_FILE_ONLY.error("user error:\n%s", "".join(traceback.format_exception(cause)))
    for record in hold.held:
        LOG_FILE_ONLY.handle(record)
    sys.exit(error_line(err))


def error_line(err: BaseException) -> str:
    """The one line a user error prints: `error: <message>`, and for an input that an earlier stage writes
    (MissingInputError.stage) the command that runs that stage. The domain names the stage; only this command
    line knows that stages run under DVC."""
    stage = getattr(err, "stage", None)
    return f"error: {err} (dvc repro {stage})" if stage else f"error: {err}"


def show_held(hold: HoldRunFailures) -> None:
    """A bug: show what Prefect said about it (emit: past the filter that held it)."""
    for record in list(hold.held):
        for handler in console_handlers():
            handler.emit(record)


def missing_input(err: FileNotFoundError, running: str) -> MissingInputError | None:
    """A stage read a file that an earlier stage writes and it is not there (the stage was started before that
    one ran, or its output was deleted): the error naming the file and the stage to run first. None when the
    file belongs to no stage's outputs, or to the `running` stage's own (a file it lost while writing is a
    bug, which keeps its traceback: "run this stage first" would send the user round in a circle).

    Every reader raising its own MissingInputError would leave any reader it forgot (pyarrow, PIL, open) to
    show a traceback; the missing path and dvc.yaml say the same, for every stage."""
    named = err.filename or (err.args[0] if len(err.args) == 1 and isinstance(err.args[0], str) else None)
    if not named:
        return None
    stage = writer_stage(Path(named))
    if stage is None or stage == running:
        return None
    return MissingInputError(f"{named}: not found; the '{stage}' stage writes it: run that stage first", stage=stage)


def writer_stage(path: Path) -> str | None:
    """The dvc.yaml stage among whose outputs `path` is (the output itself or a file inside it), else None."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    path = path.resolve()
    try:
        with Repo() as repo:
            for stage in repo.index.stages:
                for out in stage.outs:
                    output = Path(out.fs_path).resolve()
                    if path == output or output in path.parents:
                        return stage.addressing
    except DvcException as err:  # no DVC project here, or its dvc.yaml does not load
        log.debug("cannot read the stage outputs from dvc.yaml: %s", err)
    return None


@contextlib.contextmanager
def user_errors_as_one_line(*also: type[BaseException]) -> Iterator[None]:
    """For command-line entry points other than stages: a user error (or one of `also`) exits with one line."""
    caught: tuple[type[BaseException], ...] = (UserError, *also)
    try:
        yield
    except caught as err:
        sys.exit(error_line(err))
