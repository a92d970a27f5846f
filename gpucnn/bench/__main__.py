"""``python -m gpucnn.bench``: the ``gpucnn bench`` command on its own."""

import argparse
import sys

from .cli import add_arguments, run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpucnn.bench", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
