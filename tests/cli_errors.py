"""What a user error looks like on stderr, shared by the bad-input tests."""

from __future__ import annotations


def one_error_line(err: str, *names: str) -> str:
    """The one ``error: ...`` line on stderr (log lines aside), naming ``names``; never a traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and " INFO " not in line and " WARNING " not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]
