"""``python -m monitor`` and the ``audit-monitor`` command.

The command line is imported when it runs, not when this module is: a process started by
``multiprocessing`` (the monthly report's workers) imports its parent's main module first, and this one,
unlike ``monitor.cli``, costs nothing to import (the CLI brings every subsystem, ~1 s and ~40 MB a worker).
``python -m monitor`` is never imported by such a process at all.
"""

from __future__ import annotations


def main() -> None:
    from monitor.cli import main as cli_main  # here, not above: see the module docstring

    cli_main()


if __name__ == "__main__":
    main()
