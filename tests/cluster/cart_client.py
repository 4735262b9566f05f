"""The processes the nemesis harness runs beside the nodes, inside the test's netns if any.

`run`: the cart workload over the real `dynakv.Client`, one thread per client, appending a
read and a write record per add to a JSON-lines history until stdin closes. `final`: r=3
reads (read repair) and each replica's own copy, as JSON on stdout. `wait`: until the nodes
serve and agree. `bootstrap`: the secure mode's admin, on a cluster just founded. Never
judges a run: tests/cluster/nemesis.py does. In the secure mode (secure_mode.py, from the
environment) every request goes over TLS as that admin.

Records use the format of dynakv.sim.checker (values `{"id": ..., "items": [...]}`, write
ids, `seen`, outcomes ok/failed/unknown), with bytes as UTF-8 text.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import dynakv
from dynakv.errors import DynakvError, InvalidRequest, Unavailable
from dynakv.ring import Ring

try:
    from tests.cluster import secure_mode
except ImportError:  # run as a script: its folder is on the path, the repository may not be
    import secure_mode  # type: ignore[no-redef]

OK, FAILED, UNKNOWN = "ok", "failed", "unknown"
BUCKET = "carts"


# --- the cart value: the adding write's id and the items; siblings resolve by union ---------
def encode_cart(write_id: str, items: set[str]) -> bytes:
    document = {"id": write_id, "items": sorted(items)}
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def cart_document(value: bytes) -> dict[str, Any]:
    """A stored cart value as {"id", "items"}; a value that is not one becomes an item that
    names it, so the check reports it as unexpected instead of this code hiding it."""
    try:
        document = json.loads(value)
        assert isinstance(document, dict) and isinstance(document["id"], str)
        assert all(isinstance(item, str) for item in document["items"])
    except (ValueError, AssertionError, KeyError, TypeError):
        garbage = "<garbage:" + value[:40].decode(errors="replace") + ">"
        return {"id": garbage, "items": [garbage]}
    return document


def union(values: list[bytes]) -> set[str]:
    items: set[str] = set()
    for value in values:
        items.update(cart_document(value)["items"])
    return items


def text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def outcome_of(exc: DynakvError) -> str:
    """A request that raised: `failed` only when it surely never reached a node (refused
    before sending, or invalid), else `unknown`: an `unavailable` put may come after the
    coordinator stored the value, and a timeout or a dropped connection says nothing."""
    if isinstance(exc, InvalidRequest):
        return FAILED
    if isinstance(exc, Unavailable) and exc.message.startswith("no node reachable"):
        return FAILED
    return UNKNOWN


def new_client(nodes: str | list[str], **options: Any) -> dynakv.Client:
    """A dynakv.Client, in the secure mode with its CA and the admin's credentials."""
    mode = secure_mode.current()
    return dynakv.Client(nodes, **({**mode.client_settings(), **options} if mode else options))


# --- run: the workload --------------------------------------------------------------------
def add_item(
    client: dynakv.Client, cart: str, item: str, r: int | str, w: int | str
) -> list[dict[str, Any]]:
    """Read the cart with r, add `item` to the union of what was read, write it back with
    the read's context and w. Returns the read record and, if the read worked, the write's."""
    read: dict[str, Any] = {"type": "read", "cart": cart, "r": r, "invoke": time.time()}
    try:
        result = client.get(BUCKET, cart, r=r)
    except DynakvError as exc:
        read.update(outcome=outcome_of(exc), error=f"{exc.code}: {exc.message}")
        read["complete"] = time.time()
        return [read]
    read.update(outcome=OK, complete=time.time(), values=[text(v) for v in result.values])
    value = encode_cart(item, union(result.values) | {item})
    write: dict[str, Any] = {
        "type": "write",
        "cart": cart,
        "id": item,
        "value": text(value),
        "seen": sorted({cart_document(v)["id"] for v in result.values}),
        "w": w,
        "invoke": time.time(),
    }
    try:
        client.put(BUCKET, cart, value, context=result.context, w=w)
    except DynakvError as exc:
        write.update(outcome=outcome_of(exc), error=f"{exc.code}: {exc.message}")
    else:
        write["outcome"] = OK
    write["complete"] = time.time()
    return [read, write]


def run_client(
    index: int,
    args: argparse.Namespace,
    stop: threading.Event,
    history: Any,
    lock: threading.Lock,
) -> None:
    """One client: adds c{index}-{n} to random carts at about args.rate per second. Its home
    node comes first in its list; after an error it starts again from home. A third of the
    reads use r=1 (stale reads: more siblings) and a third of the writes w=1; with
    args.level, every read and write uses that level instead (e.g. local_quorum)."""
    nodes = args.nodes.split(",")
    nodes = nodes[index % len(nodes) :] + nodes[: index % len(nodes)]
    rng = random.Random(f"{args.seed}-{index}")
    period = 1.0 / args.rate
    # route=False: the home node coordinates or forwards (routing would bypass forwarding)
    client = new_client(nodes, timeout=args.timeout, route=False)
    try:
        for n in range(args.max_adds):
            if stop.is_set():
                return
            started = time.time()
            cart = f"{args.prefix}cart{rng.randrange(args.carts)}"
            r: int | str = 1 if rng.random() < 1 / 3 else 2
            w: int | str = 1 if rng.random() < 1 / 3 else 2
            if args.level:
                r = w = args.level
            process = f"{args.client_prefix}c{index}"
            records = add_item(client, cart, f"{process}-{n}", r, w)
            with lock:
                for record in records:
                    history.write(json.dumps({"process": process, **record}) + "\n")
                history.flush()
            if records[-1]["outcome"] != OK:
                client.close()
                client = new_client(nodes, timeout=args.timeout, route=False)
            stop.wait(max(0.0, period - (time.time() - started)) * rng.uniform(0.5, 1.5))
    finally:
        client.close()


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    lock = threading.Lock()

    def watch_stdin() -> None:
        sys.stdin.read()  # the harness closes our stdin to stop the workload
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    with open(args.out, "a") as history:
        threads = [
            threading.Thread(target=run_client, args=(i, args, stop, history, lock))
            for i in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return 0


# --- final: read repair, then every replica's own copy -------------------------------------
def http_json(addr: str, path: str, timeout: float = 5.0) -> tuple[int, Any]:
    """GET `path` from the HTTP port at `addr` (https, as the admin, in the secure mode)."""
    mode = secure_mode.current()
    headers = {"Authorization": mode.authorization()} if mode else {}
    scheme = "https" if mode else "http"
    request = urllib.request.Request(f"{scheme}://{addr}{path}", headers=headers)
    context = mode.ssl_context() if mode else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def replica_copy(http_addr: str, key: str) -> dict[str, Any]:
    """One node's own copy: its items (None when it holds none), values, tombstones, context."""
    absent = {"items": None, "values": [], "tombstones": 0, "context": ""}
    try:
        status, body = http_json(http_addr, f"/v1/replica/{BUCKET}/{key}")
    except (OSError, ValueError) as exc:
        return {**absent, "error": str(exc)}
    if status == 404:
        return absent
    values = [base64.b64decode(s["value_b64"]) for s in body["siblings"]]
    return {
        "items": sorted(union(values)),
        "values": sorted(text(v) for v in values),
        "tombstones": body["tombstones"],
        "context": body["context"],
    }


def agree(copies: dict[str, dict[str, Any]]) -> bool:
    """Every replica holds a copy, the same values and the same causal context."""
    shapes = {json.dumps(copy, sort_keys=True) for copy in copies.values()}
    return len(shapes) == 1 and next(iter(copies.values()))["items"] is not None


def final(args: argparse.Namespace) -> int:
    """Rounds of r=3 reads of every cart through every node, until at least args.rounds
    rounds are done and every cart's primaries hold the same items (or the deadline)."""
    nodes = args.nodes.split(",")
    _, view = http_json(args.http.split(",")[0], "/v1/cluster")
    ring = Ring(view["ring"]["size"], tuple(view["ring"]["owners"]))
    ring = ring.placed({m["name"]: (m["datacenter"], m["rack"]) for m in view["members"]})
    http_of = {m["name"]: m["http_addr"] for m in view["members"]}
    carts = [f"{args.prefix}cart{c}" for c in range(args.carts)]
    owners = {cart: ring.preference_list(ring.partition(BUCKET, cart), args.n) for cart in carts}

    def copies_of(cart: str) -> dict[str, dict[str, Any]]:
        return {name: replica_copy(http_of[name], cart) for name in owners[cart]}

    report: dict[str, Any] = {
        cart: {"read": None, "read_errors": [], "replicas": copies_of(cart)} for cart in owners
    }
    divergent_before = sorted(cart for cart in owners if not agree(report[cart]["replicas"]))
    deadline = time.monotonic() + args.deadline
    rounds = 0
    converged = False
    while not (rounds >= args.rounds and converged) and time.monotonic() < deadline:
        rounds += 1
        for cart, entry in report.items():
            for node in nodes:  # every node coordinates a read: read repair from each
                try:
                    with new_client(node, timeout=args.timeout, route=False) as client:
                        entry["read"] = sorted(union(client.get(BUCKET, cart, r=3).values))
                except DynakvError as exc:
                    entry["read_errors"].append(f"round {rounds} via {node}: {exc.code}")
        time.sleep(0.3)  # read repair is sent once every replica has answered
        for cart, entry in report.items():
            entry["replicas"] = copies_of(cart)
        converged = all(e["read"] is not None and agree(e["replicas"]) for e in report.values())
    result = {
        "rounds": rounds,
        "converged": converged,
        "divergent_before": divergent_before,
        "carts": report,
    }
    json.dump(result, sys.stdout)
    return 0


# --- wait: the nodes serve, agree on membership, and see each other up --------------------
def wait(args: argparse.Namespace) -> int:
    addrs = args.http.split(",")
    deadline = time.monotonic() + args.deadline
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            answers = [http_json(addr, "/v1/cluster", timeout=2.0) for addr in addrs]
        except (OSError, ValueError) as exc:
            last = str(exc)
        else:
            refused = [body for status, body in answers if status != 200]
            if refused:  # secure: a joiner refuses the admin until gossip brings the users
                last = json.dumps(refused)
                time.sleep(0.1)
                continue
            views = [body for _, body in answers]
            rings = {json.dumps(v["ring"]) for v in views}
            statuses = [m["status"] for v in views for m in v["members"]]
            if (
                all(len(v["members"]) == args.members for v in views)
                and len(rings) == 1
                and all(s == "up" for s in statuses)
                and all(v.get("next_ring") is None for v in views)  # no transfer under way
            ):
                return 0
            last = json.dumps([[(m["name"], m["status"]) for m in v["members"]] for v in views])
        time.sleep(0.1)
    print(f"cluster not ready after {args.deadline}s: {last}", file=sys.stderr)
    return 1


def bootstrap(args: argparse.Namespace) -> int:
    """The secure mode's admin, through the first of --nodes (a node founding a cluster)."""
    mode = secure_mode.current()
    if mode is not None:
        secure_mode.bootstrap_admin(args.nodes.split(",")[0], mode, timeout=args.deadline)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.cart_client")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--nodes", default="", help="node ports HOST:PORT, comma-separated")
    common.add_argument("--http", default="", help="HTTP ports HOST:PORT, comma-separated")
    common.add_argument("--carts", type=int, default=3)
    common.add_argument("--prefix", default="", help="of the cart keys, to tell runs apart")
    common.add_argument("--timeout", type=float, default=4.0, help="client timeout, seconds")
    common.add_argument("--deadline", type=float, default=30.0, help="give up after, seconds")
    p_run = sub.add_parser("run", parents=[common])
    p_run.add_argument("--clients", type=int, default=4)
    p_run.add_argument("--rate", type=float, default=4.0, help="adds per second per client")
    p_run.add_argument("--max-adds", type=int, default=100, help="per client")
    p_run.add_argument("--seed", default="0")
    p_run.add_argument("--out", required=True, help="history file, one JSON line per add")
    p_run.add_argument("--level", default="", help="r and w of every request (a level name)")
    p_run.add_argument("--client-prefix", default="", help="of client names and item ids")
    p_final = sub.add_parser("final", parents=[common])
    p_final.add_argument("--n", type=int, default=3, help="replicas per key")
    p_final.add_argument("--rounds", type=int, default=3, help="read rounds at least")
    p_wait = sub.add_parser("wait", parents=[common])
    p_wait.add_argument("--members", type=int, required=True)
    sub.add_parser("bootstrap", parents=[common])
    args = parser.parse_args(argv)
    commands = {"run": run, "final": final, "wait": wait, "bootstrap": bootstrap}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
