"""The client commands of the `pollama` CLI, one module per group; api/cli.py wires them to argparse."""

INTERRUPTED = 130    # the shell's exit status for a command stopped by Ctrl-C
