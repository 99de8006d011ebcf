"""Each process of the package loads what its own path uses, not everything the package has.

The suite starts well over a thousand writers, clients and commands, and each pays its imports
before anything else: a command loads only its own module, a process that only queries loads
no zmq and no codec, and nothing loads asyncio (which pyzmq's monitor helpers bring) unless it
watches or serves over TCP. Each probe runs in a fresh interpreter, where nothing else of the
suite has been imported yet.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from see_persistence.commands import COMMANDS, load


def loaded_after(code: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules starting with one of `prefixes` that a fresh interpreter has after running `code`."""
    listing = f"sorted(m for m in sys.modules if m.startswith({prefixes!r}))"
    probe = f"import json, sys\n{code}\nprint(json.dumps({listing}))\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


COMMAND_MODULES = tuple(f"see_persistence.commands.{name}" for name, _summary in COMMANDS)


def _command_modules(loaded: list[str]) -> list[str]:
    return [m for m in loaded if m in COMMAND_MODULES]


@pytest.mark.unit
@pytest.mark.parametrize("name", [name for name, _summary in COMMANDS])
def test_every_listed_command_is_the_command_of_its_module(name):
    command = load(name)
    assert command.name == name
    assert command.description and command.examples


def test_the_top_level_help_loads_no_command_module():
    loaded = loaded_after(
        "from see_persistence.cli import build_parser\nbuild_parser().format_help()",
        ("see_persistence.commands.",),
    )
    assert _command_modules(loaded) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["query", "--db", "x.db", "SELECT 1"],
        ["status", "--db", "x.db"],
        ["writer", "--db", "x.db"],
        ["--log-level", "DEBUG", "keys", "--db", "x.db", "show"],
        ["check", "--help"],
    ],
)
def test_a_command_loads_its_own_module_and_no_other_command(argv):
    code = (
        "from see_persistence.cli import build_parser\n"
        f"try:\n    build_parser().parse_args({argv!r})\nexcept SystemExit:\n    pass\n"
    )
    loaded = loaded_after(code, ("see_persistence.commands.",))
    chosen = next(a for a in argv if f"see_persistence.commands.{a}" in COMMAND_MODULES)
    assert _command_modules(loaded) == [f"see_persistence.commands.{chosen}"]


def test_a_process_that_only_queries_loads_neither_zmq_nor_the_codec():
    loaded = loaded_after(
        "import see_persistence, see_persistence.protocol.errors\n"
        "from see_persistence.reader.readonly import ReadOnlyAuthorizer\n"
        "from see_persistence.protocol import schema, Status",
        ("zmq", "asyncio", "see_persistence.protocol.codec", "see_persistence.reader.queries"),
    )
    assert loaded == []


def test_a_reader_loads_the_record_models_and_psutil_with_its_first_lease_or_record_read(tmp_path):
    db = tmp_path / "plain.db"
    sqlite3.connect(db).executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
    heavy = ("pydantic", "psutil", "see_persistence.protocol.models")
    queried = (
        "from see_persistence.reader import Reader\n"
        "from see_persistence.commands import common, query\n"
        f"reader = Reader({str(db)!r})\n"
        "assert reader.query('SELECT x FROM t') == [(1,)]\n"
    )
    assert loaded_after(queried, heavy) == []
    # A lease read loads them (here on a file no writer set up: None, but the same path).
    read_lease = queried + "assert reader.get_writer_status() is None\n"
    assert set(heavy) <= set(loaded_after(read_lease, heavy))


def test_a_lease_read_as_plain_values_loads_psutil_but_not_the_models(tmp_path):
    db = tmp_path / "plain.db"
    sqlite3.connect(db).executescript("CREATE TABLE t (x);")
    code = f"from see_persistence.reader import Reader\nassert Reader({str(db)!r}).writer_lease() is None\n"
    loaded = loaded_after(code, ("pydantic", "psutil", "see_persistence.protocol.models"))
    assert "psutil" in loaded and all(m.startswith("psutil") for m in loaded), loaded


def test_a_process_that_only_records_never_loads_the_models(db, writers):
    # A Client reads the lease and its instance's row as plain values (Reader.writer_lease,
    # Reader.instance_progress): pydantic would add about 80 ms of CPU to every such process.
    writers(db).wait_holding_lease()
    code = (
        "from see_persistence import Client\n"
        f"with Client({str(db)!r}) as client:\n"
        "    client.create_workflow('nightly')\n"
        "    assert client.flush(30) and client.stats.confirmed == 1, client.stats\n"
    )
    assert loaded_after(code, ("pydantic", "see_persistence.protocol.models")) == []


def test_the_reader_a_gui_imports_from_the_package_comes_with_its_models():
    # A GUI's first read must not be the one that builds the models: they load with the import.
    loaded = loaded_after("from see_persistence import Reader", ("see_persistence.protocol.models",))
    assert loaded == ["see_persistence.protocol.models"]


@pytest.mark.parametrize(
    "modules",
    ["see_persistence.writer.service, see_persistence.commands.writer", "see_persistence.client"],
)
def test_the_writer_and_the_client_load_no_asyncio(modules):
    # pyzmq's zmq.utils.monitor imports zmq.asyncio: the TCP monitors import it when they
    # first hear an event, so an ipc writer or client never loads it.
    assert loaded_after(f"import {modules}", ("asyncio", "zmq.utils.monitor", "zmq.asyncio")) == []


def test_the_lazy_names_resolve_to_the_modules_objects():
    # What the package __getattr__s hand out is the object of the module that defines it.
    from see_persistence import protocol, reader, writer
    from see_persistence.protocol import codec, errors, models, operations, status
    from see_persistence.reader import queries, watch
    from see_persistence.writer import service

    assert protocol.encode_message is codec.encode_message and protocol.Status is status.Status
    assert protocol.SeePersistenceError is errors.SeePersistenceError
    assert protocol.WriterStatus is models.WriterStatus and protocol.OPERATIONS is operations.OPERATIONS
    assert reader.Reader is queries.Reader and reader.Watcher is watch.Watcher
    assert writer.Writer is service.Writer
    for package in (protocol, reader, writer):
        assert set(package.__all__) <= set(dir(package))
        with pytest.raises(AttributeError):
            package.no_such_name  # noqa: B018
