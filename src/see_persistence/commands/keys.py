"""`see-persistence keys`: the CURVE keys of the TCP transport (see see_persistence.keys)."""

from __future__ import annotations

import argparse

from ..connection import TcpEndpoints
from ..keys import KeyStore, public_key_from
from .base import Command, UsageError
from .common import is_server, open_database


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the keys command's actions and arguments."""
    parser.add_argument(
        "--keys-dir",
        metavar="DIR",
        default=None,
        help="the key directory (default: $SEE_PERSISTENCE_KEYS_DIR or ~/.s_e_e/keys)",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser(
        "create", help="create the writer and client key pairs if missing (allowing the client)"
    )
    actions.add_parser("list", help="list the allowed client keys")
    # One Z85 key in 85 begins with '-', which argparse reads as an option: after '--' it is
    # read as the key (each action's --help says so, and `keys --help` shows it).
    after_dashes = "a key that begins with '-' goes after '--'"
    allow = actions.add_parser("allow", help="allow a client public key (given as itself or as a file)")
    allow.add_argument(
        "key",
        metavar="KEY|FILE",
        help=f"the key, or a file holding it; {after_dashes} (allow --name NAME -- KEY)",
    )
    allow.add_argument("--name", default="", help="a label kept beside the key")
    revoke = actions.add_parser("revoke", help="take a client public key off the allow-list")
    revoke.add_argument("key", metavar="KEY", help=f"the key; {after_dashes} (revoke -- KEY)")
    actions.add_parser(
        "show",
        help="print the writer's connection strings (from the lease: endpoint + public key) and this"
        " user's client public key",
    )


def run(args: argparse.Namespace) -> int:
    """Carry out one keys action."""
    store = KeyStore(args.keys_dir)
    if args.action == "create":
        writer, client = store.writer_pair(), store.client_pair()
        print(f"keys in {store.directory}")
        print(f"writer public key  {writer.public}")
        print(f"client public key  {client.public}")
    elif args.action == "list":
        for key, label in store.labels():
            print(f"{key}  {label}".rstrip())
    elif args.action == "allow":
        try:
            key = public_key_from(args.key)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        added = store.allow(key, label=args.name)
        print(f"{'allowed' if added else 'already allowed'}: {key}")
    elif args.action == "revoke":
        try:
            removed = store.revoke(args.key)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        print(f"{'revoked' if removed else 'not on the allow-list'}: {args.key.strip()}")
    else:
        _show(args, store)
    return 0


def _show(args: argparse.Namespace, store: KeyStore) -> None:
    writer = store.writer_pair()
    print(f"writer public key  {writer.public}")
    print(f"client public key  {store.client_pair().public}")
    if not is_server(args.db) and not args.db.exists():
        print(f"no database at {args.db} yet: no writer has listened on TCP")
        return
    reader = open_database(args.db)
    try:
        status = reader.get_writer_status()
    finally:
        reader.close()
    tcp = [pair for pair in (status.endpoints if status else ()) if pair[0].startswith("tcp://")]
    if status is None or not tcp or status.public_key is None:
        print(f"no writer of {args.db} has listened on TCP yet (see-persistence writer --listen tcp://...)")
        return
    state = "alive" if status.alive else "not running"
    for pull, pub in tcp:
        print(f"connect ({state})   {TcpEndpoints(pull, pub, status.public_key).connection_string()}")


COMMAND = Command(
    name="keys",
    description="The TCP transport is CURVE-encrypted: the writer has a key pair and accepts only"
    " client keys on its allow-list; all live in an owner-only directory. Pairs are created on first"
    " use, and this user's client key is allowed when it is created, so one user on one machine"
    " configures nothing. A client on another machine shows its key here and the writer's owner"
    " allows it; 'show' prints the connection string that client needs.",
    examples=(
        "see-persistence keys show",
        "see-persistence keys allow 'rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7' --name laptop",
        "see-persistence keys revoke 'rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7'",
        "see-persistence keys allow --name phone -- '-5fk&x9Pwk:K)3/]ro/y1Di+Za]FHrAgzp!)0{Ts'",
        "see-persistence keys list",
    ),
    configure=configure,
    run=run,
    takes_url=True,
)
