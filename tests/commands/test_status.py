import io
import threading

from rich.console import Console

from budget_edge.commands.status import LogStatus, no_output_threads, status_line


def test_in_a_log_updates_are_timed_lines_at_most_one_per_interval() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=40)
    with status_line(console, "exporting", every_s=3600) as status:
        status.update("exported stem")  # within the first hour: nothing yet
    assert out.getvalue() == ""  # an error right away stays the only line
    out.truncate(0)
    out.seek(0)
    long = "searching static masks on fashion-mnist validation split (2000 images)"
    with status_line(console, "bench", every_s=0) as status:
        status.update(long)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(long)
    assert lines[0].startswith("[    0 s]")


def test_on_a_terminal_it_is_rich_s_spinner() -> None:
    console = Console(file=io.StringIO(), force_terminal=True)
    with status_line(console, "exporting") as status:
        status.update("exported stem")
        assert type(status).__name__ == "Status"


def test_in_a_log_a_heartbeat_repeats_a_long_step_at_the_interval() -> None:
    """One step that runs on without an update still shows up every interval."""
    out = io.StringIO()
    now = [0.0]
    status = LogStatus(Console(file=out, force_terminal=False), every_s=20, clock=lambda: now[0])
    status.tick()  # nothing said yet: nothing to repeat
    status.update("scoring 10 masks")
    for t in (10.0, 25.0, 30.0, 44.0, 46.0):
        now[0] = t
        status.tick()
    status.update("scoring done")  # right after the last line: waits for the interval
    now[0] = 66.0
    status.tick()
    assert out.getvalue().splitlines() == [
        "[   25 s] scoring 10 masks",
        "[   46 s] scoring 10 masks",
        "[   66 s] scoring done",
    ]


def test_the_heartbeat_thread_runs_only_inside_the_status_line() -> None:
    console = Console(file=io.StringIO(), force_terminal=False)
    before = {t.name for t in threading.enumerate()}
    with status_line(console, "bench", every_s=3600) as status:
        assert "status-heartbeat" in {t.name for t in threading.enumerate()} - before
        status.update("timing")
    assert "status-heartbeat" not in {t.name for t in threading.enumerate()} - before


def test_while_a_measurement_runs_the_heartbeat_holds_and_updates_still_print() -> None:
    """Timed calls share the CPU with whatever prints: no line from the heartbeat thread
    then, while the caller's own updates (between timed jobs) still reach the log."""
    out = io.StringIO()
    now = [0.0]
    status = LogStatus(Console(file=out, force_terminal=False), every_s=20, clock=lambda: now[0])
    status.update("timing 8 rows: 0/80 calls")
    with no_output_threads(status):
        now[0] = 25.0
        status.tick()  # due, but held
        now[0] = 30.0
        status.update("timing 8 rows: 40/80 calls")  # the caller's: printed
        now[0] = 55.0
        status.tick()  # due again, still held
    now[0] = 75.0
    status.tick()  # released: the heartbeat is back
    assert out.getvalue().splitlines() == [
        "[   30 s] timing 8 rows: 40/80 calls",
        "[   75 s] timing 8 rows: 40/80 calls",
    ]
