"""Authentication on the Redis front end, as Redis 6 ACLs look to a client: `AUTH user
pass` (or `AUTH pass` for user "default"), `HELLO 2 AUTH user pass`, `-NOAUTH` before
that, `-WRONGPASS` for bad credentials, `-NOPERM` for a command the user's grants on the
front end's bucket do not allow (access.py). Off: AUTH is refused as Redis refuses it
without a configured password, and every command runs.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from dynakv.access import Need, allows
from dynakv.errors import TooManyLogins, Unauthenticated
from dynakv.runtime.gatekeeper import WRONGPASS
from dynakv.runtime.login_limits import source_of
from dynakv.runtime.resp_protocol import OK, CommandError, error, integer

if TYPE_CHECKING:
    from dynakv.runtime.resp import RespConnection, Slot

NOAUTH = b"-NOAUTH Authentication required.\r\n"
WRONGPASS_LINE = b"-WRONGPASS " + WRONGPASS.encode() + b"\r\n"
OPEN = frozenset({b"auth", b"hello", b"quit"})  # what runs before authentication
READS = frozenset({b"get", b"mget", b"exists", b"ttl", b"pttl"})
WRITES = frozenset({b"set", b"mset", b"del", b"expire", b"pexpire", b"persist"})


def refusal(conn: RespConnection, name: bytes) -> bytes | None:
    """The error line command `name` gets on conn now, or None to run it."""
    gate = conn.server.gate
    if not gate.enabled or name in OPEN:
        return None
    user = gate.user(conn.user)  # read per command: a revoke or delete applies at once
    if user is None:
        conn.user = None
        return NOAUTH
    if name in READS or name in WRITES:
        need = Need("read" if name in READS else "write", conn.bucket)
        if not allows(user, need):
            command = name.decode("ascii", "replace")
            return b"-NOPERM this user has no permissions to run the '%s' command\r\n" % (
                command.encode()
            )
    return None


def run_auth(conn: RespConnection, slot: Slot) -> None:
    args = slot.args
    user, secret = (b"default", args[1]) if len(args) == 2 else (args[1], args[2])
    _login(conn, slot, user, secret, OK)


def run_hello(conn: RespConnection, slot: Slot) -> None:
    """HELLO [2 [AUTH user pass] [SETNAME name]]: RESP2 only (this front end's protocol)."""
    args = slot.args
    if len(args) > 1 and args[1] != b"2":
        conn.done(slot, b"-NOPROTO sorry, this protocol version is not supported.\r\n")
        return
    rest = list(args[2:])
    credentials: tuple[bytes, bytes] | None = None
    while rest:
        option = rest.pop(0).lower()
        if option == b"auth" and len(rest) >= 2:
            credentials = (rest.pop(0), rest.pop(0))
        elif option == b"setname" and rest:
            conn.client_name = rest.pop(0) or None
        else:
            raise CommandError(f"syntax error in HELLO option '{option.decode(errors='replace')}'")
    answer = _hello_map(conn)
    if credentials is None:
        conn.done(slot, answer if conn.user or not conn.server.gate.enabled else NOAUTH)
        return
    _login(conn, slot, credentials[0], credentials[1], answer)


def _login(conn: RespConnection, slot: Slot, user: bytes, secret: bytes, answer: bytes) -> None:
    gate = conn.server.gate
    if not gate.enabled:
        conn.done(
            slot,
            error(
                "AUTH <password> called without any password configured for the default "
                "user. Are you sure your configuration is correct?"
            ),
        )
        return

    async def attempt() -> None:
        try:
            record = await gate.login(
                user.decode("utf-8", "replace"),
                secret.decode("utf-8", "replace"),
                "resp",
                source_of(conn.transport),
            )
        except TooManyLogins as exc:
            conn.done(slot, error(exc.message))
        except Unauthenticated:
            conn.done(slot, WRONGPASS_LINE)
        else:
            conn.user = record.name
            conn.done(slot, answer)
        conn.logged_in()

    conn.logging_in = True
    # The connection holds the task: the loop keeps only a weak reference.
    conn.login = asyncio.get_running_loop().create_task(attempt())


def _hello_map(conn: RespConnection) -> bytes:
    """Redis's HELLO answer in RESP2: a flat array of field, value pairs."""
    pairs = [
        (b"server", b"$5\r\nredis\r\n"),
        (b"version", b"$5\r\n7.0.0\r\n"),
        (b"proto", integer(2)),
        (b"id", integer(conn.id)),
        (b"mode", b"$10\r\nstandalone\r\n"),
        (b"role", b"$6\r\nmaster\r\n"),
        (b"modules", b"*0\r\n"),
    ]
    out = [b"*%d\r\n" % (2 * len(pairs))]
    for name, value in pairs:
        out.append(b"$%d\r\n%s\r\n" % (len(name), name))
        out.append(value)
    return b"".join(out)
