"""What the command-line entry points share before absl parses their flags."""

from __future__ import annotations


def flag_value(argv, name: str) -> str | None:
    """The value of ``--NAME VALUE`` or ``--NAME=VALUE`` in ``argv`` (the program name first; the last one wins;
    nothing after ``--``), or ``None`` when it is not given."""
    value = None
    for i, a in enumerate(argv[1:], start=1):
        if a == "--":
            break
        if a.startswith(f"--{name}="):
            value = a.split("=", 1)[1]
        elif a == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value
