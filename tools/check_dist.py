"""Check what `python -m build` made: the archives' contents, then the wheel as a user installs it.

    python tools/check_dist.py [DIST_DIR] [--install]

Without --install it reads the one wheel and the one sdist in DIST_DIR (default `dist`) and checks:
- the wheel holds the package with its py.typed, the `see-persistence` command, the version of
  src/see_persistence/__init__.py, and nothing else (no tests, no tools);
- the sdist holds what a build from it needs (pyproject.toml, README.md, the package with its
  py.typed) and what its readers need: CHANGELOG.md, the docs the README links to, the tests
  and the tools the tests run.

With --install it also makes a fresh venv in a temporary directory, installs the wheel there
(its dependencies from the package index), and from that directory, with no PYTHONPATH, so that
the source tree cannot be imported, runs `see-persistence --version` and `see-persistence demo`
on a database in the temporary directory. Prints one line per check; exits 1 on the first failure.
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import tarfile
import tempfile
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "see_persistence"
DISTRIBUTION = "see-persistence"
COMMAND = "see-persistence"

INSTALL_TIMEOUT_S = 600.0  # pip fetching the dependencies on a slow network
COMMAND_TIMEOUT_S = 60.0
DEMO_TIMEOUT_S = 300.0  # the demo's own waits are bounded well below this

SDIST_REQUIRED = (
    "PKG-INFO",
    "pyproject.toml",
    "README.md",
    "CHANGELOG.md",
    f"src/{PACKAGE}/__init__.py",
    f"src/{PACKAGE}/py.typed",
    "tests/conftest.py",
)
SDIST_REQUIRED_DIRS = ("docs/", "tests/", "tools/")


class CheckFailed(Exception):
    """One check did not hold; the message says which and why."""


def source_version() -> str:
    """The version literal in src/see_persistence/__init__.py, read as setuptools reads it."""
    tree = ast.parse((ROOT / "src" / PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(target, ast.Name) and target.id == "__version__" for target in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    raise CheckFailed(f"no __version__ literal in src/{PACKAGE}/__init__.py")


def _one(dist_dir: Path, pattern: str) -> Path:
    found = sorted(dist_dir.glob(pattern))
    if len(found) != 1:
        raise CheckFailed(f"expected one {pattern} in {dist_dir}, found {[p.name for p in found]}")
    return found[0]


def check_wheel(wheel: Path, version: str) -> None:
    """The wheel holds the package, its py.typed and entry point, and nothing from tests or tools."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = f"{PACKAGE}-{version}.dist-info"
        strays = [n for n in names if not (n.startswith(f"{PACKAGE}/") or n.startswith(f"{dist_info}/"))]
        if strays:
            raise CheckFailed(f"{wheel.name} holds files outside the package: {strays[:10]}")
        if f"{PACKAGE}/py.typed" not in names:
            raise CheckFailed(f"{wheel.name} has no {PACKAGE}/py.typed: type checkers would ignore it")
        if any("/tests/" in n or "/tools/" in n for n in names):
            raise CheckFailed(f"{wheel.name} holds tests or tools")
        metadata = archive.read(f"{dist_info}/METADATA").decode("utf-8")
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode("utf-8")
    if f"\nVersion: {version}\n" not in metadata:
        raise CheckFailed(f"{wheel.name}'s METADATA does not say Version: {version}")
    if f"{COMMAND} = {PACKAGE}.cli:main" not in entry_points:
        raise CheckFailed(f"{wheel.name} does not install the {COMMAND} command")
    print(f"ok  {wheel.name}: {len(names)} files, py.typed, the {COMMAND} command, no tests or tools")


def check_sdist(sdist: Path, version: str) -> None:
    """The sdist holds what a build from it and its readers need."""
    top = f"{PACKAGE}-{version}/"
    with tarfile.open(sdist) as archive:
        names = [m.name for m in archive.getmembers() if m.isfile()]
    outside = [n for n in names if not n.startswith(top)]
    if outside:
        raise CheckFailed(f"{sdist.name} holds files outside {top}: {outside[:10]}")
    inside = {n[len(top) :] for n in names}
    missing = [n for n in SDIST_REQUIRED if n not in inside]
    missing += [d for d in SDIST_REQUIRED_DIRS if not any(n.startswith(d) for n in inside)]
    if missing:
        raise CheckFailed(f"{sdist.name} lacks {missing}")
    litter = [n for n in inside if "__pycache__" in n or n.endswith((".pyc", ".db", ".db-wal", ".db-shm"))]
    if litter:
        raise CheckFailed(f"{sdist.name} holds build or run litter: {litter[:10]}")
    print(f"ok  {sdist.name}: {len(inside)} files, the package, README, CHANGELOG, docs, tests and tools")


def _run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    print("$", " ".join(argv), flush=True)
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise CheckFailed(
            f"{' '.join(argv)} exited with {result.returncode}\n{result.stdout}\n{result.stderr}".rstrip()
        )
    return result.stdout


def check_installed(wheel: Path, version: str) -> None:
    """Install the wheel into a fresh venv and run the command from outside the source tree."""
    with tempfile.TemporaryDirectory(prefix="see-persistence-wheel-") as tmp:
        work = Path(tmp)
        venv_dir = work / "venv"
        venv.create(venv_dir, with_pip=True)
        python = venv_dir / "bin" / "python"
        command = venv_dir / "bin" / COMMAND
        # Nothing of the checkout may leak in: no PYTHONPATH, and the working directory is the
        # temporary one, so `import see_persistence` can only find the installed wheel.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.pop("SEE_PERSISTENCE_DB", None)
        _run(
            [str(python), "-m", "pip", "install", "--quiet", str(wheel.resolve())],
            cwd=work,
            env=env,
            timeout=INSTALL_TIMEOUT_S,
        )
        where = _run(
            [str(python), "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"],
            cwd=work,
            env=env,
            timeout=COMMAND_TIMEOUT_S,
        ).strip()
        if not Path(where).resolve().is_relative_to(venv_dir.resolve()):
            raise CheckFailed(f"{PACKAGE} was imported from {where}, not from the fresh venv")
        said = _run([str(command), "--version"], cwd=work, env=env, timeout=COMMAND_TIMEOUT_S).strip()
        if said != f"{COMMAND} {version}":
            raise CheckFailed(f"{COMMAND} --version said {said!r}, expected '{COMMAND} {version}'")
        print(f"ok  {COMMAND} --version: {said}")
        shown = _run(
            [str(command), "demo", "--db", str(work / "demo" / "workflows.db")],
            cwd=work,
            env=env,
            timeout=DEMO_TIMEOUT_S,
        )
        print(shown.rstrip())
        print(f"ok  {COMMAND} demo from the installed wheel, imported from {where}")


def main(argv: list[str] | None = None) -> int:
    """Run the checks; 0 when all hold, 1 at the first that does not."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dist_dir", nargs="?", default="dist", type=Path, help="where build put them")
    parser.add_argument("--install", action="store_true", help="also install the wheel and run it")
    args = parser.parse_args(argv)
    try:
        version = source_version()
        wheel = _one(args.dist_dir, f"{PACKAGE}-*.whl")
        check_wheel(wheel, version)
        check_sdist(_one(args.dist_dir, f"{PACKAGE}-*.tar.gz"), version)
        if args.install:
            check_installed(wheel, version)
    except (CheckFailed, subprocess.TimeoutExpired) as exc:
        print(f"FAIL {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
