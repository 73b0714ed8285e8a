"""`python -m tfkd` and the `tfkd` command (setup.py's console script)."""

import os
import signal
import sys


def _stopped_while_starting(signum, frame):
    # Until tfkd.cli has loaded (a second or more on busy cores) its own handling cannot
    # run; nothing has been read or written yet, so the stop only needs its one line.
    sys.stderr.write(f"tfkd: interrupted by {signal.Signals(signum).name} while tfkd was "
                     "starting; nothing was written\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def main():
    # First thing, before tfkd.cli, absl and TensorFlow import: tfkd.cli.run replaces
    # these with the run's own handling as soon as it starts.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopped_while_starting)
    from tfkd.cli import run

    run()


if __name__ == "__main__":
    main()
