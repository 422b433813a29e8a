import io

from rich.console import Console

from budget_edge.commands.status import status_line


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
