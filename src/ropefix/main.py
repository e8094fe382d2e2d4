"""The only module that reads argv: builds the subcommands and maps failures to exit codes."""

from __future__ import annotations

import argparse
import datetime
import importlib
import platform
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import ropefix
from ropefix import extras
from ropefix.errors import RopefixError

# One module per subcommand under ropefix.commands; each defines
# ``register(subparsers)``, which adds its parser with ``set_defaults(func=run)``,
# and ``run(args) -> int``.
COMMANDS = ["cache", "checkout", "run", "backport", "matrix", "verify", "sweep", "scan", "apply", "patches", "pr"]


DESCRIPTION = """\
Find, fix, prove and ship the mRoPE rope_deltas multi-device bug in Hugging Face transformers.

Pipeline: a release (checkout) -> its hazards (scan, apply) -> proof on simulated devices (verify,
sweep, matrix) -> what may ship, only with its proof (patches, backport, pr). `ropefix run` does it
end to end on one release. `ropefix COMMAND --help` tells more."""


class _Version(argparse.Action):
    """``--version``, reading the installed metadata only when asked (importlib.metadata is the CLI's
    costliest import: 20-250 ms here, against 45 ms for the rest of the parser)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help=kwargs.get("help"))

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"ropefix {ropefix.__version__}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ropefix", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action=_Version, help="show the installed version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"ropefix.commands.{name}")
        except ModuleNotFoundError as e:  # its extra is not installed: the command says what to install
            if not extras.register_stub(sub, name, e):
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "stub", False):  # a stub takes any arguments, to answer with its hint
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with extras.needed_by(args.command):  # a missing extra: one line naming the pip install, exit 1
            return int(args.func(args) or 0)
    except RopefixError as e:
        print(f"ropefix: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("ropefix: interrupted; nothing half-done was kept.", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - any bug: a crash log and exit 1, not a traceback
        log = _write_crash_log(argv)
        where = f"details in {log}" if isinstance(log, Path) else log
        print(f"ropefix: unexpected error (a bug in ropefix); {where}", file=sys.stderr)
        return 3


def _write_crash_log(argv: Sequence[str] | None) -> Path | str:
    """The report goes to the cache (``ropefix.log``); where the cache cannot be written, to the temp folder;
    where nothing can be written, the report's last line is returned to be printed instead."""
    import tempfile

    from ropefix import files
    from ropefix.store import default_root

    versions = []
    for mod in ("torch", "transformers", "accelerate", "libcst", "git"):
        try:
            versions.append(f"{mod} {importlib.import_module(mod).__version__}")
        except Exception as e:  # noqa: BLE001 - the report must be written whatever is broken
            versions.append(f"{mod} unavailable ({type(e).__name__})")
    report = (
        "### ropefix crash report\n\n"
        f"- when: {datetime.datetime.now().isoformat(timespec='seconds')}\n"
        f"- command: ropefix {' '.join(argv if argv is not None else sys.argv[1:])}\n"
        f"- ropefix {ropefix.__version__}, python {platform.python_version()}, {platform.platform()}\n"
        f"- {', '.join(versions)}\n\n```\n{traceback.format_exc()}```\n"
    )
    try:
        first = default_root()
    except ImportError:  # the core alone has no platformdirs: the crash log still gets written
        first = Path(tempfile.gettempdir())
    for folder in (first, Path(tempfile.gettempdir())):
        try:
            return files.atomic_write(folder / "ropefix.log", report)
        except OSError:
            continue
    return f"no writable folder for the log; the error was: {traceback.format_exc().strip().splitlines()[-1]}"


if __name__ == "__main__":
    raise SystemExit(main())
