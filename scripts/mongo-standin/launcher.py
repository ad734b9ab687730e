"""Run mongoeco's MongoDB wire server as a test stand-in for mongod.

mongoeco (PyPI, Python >= 3.13) speaks the MongoDB wire protocol, but two of
its integer-type habits break non-Python drivers such as the Rust `mongodb`
crate. This launcher patches them in-process before starting the server:

1. Requests: mongoeco decodes BSON Int64 into its own `BsonInt64` wrapper,
   which is not a Python `int`, so `limit`, `skip`, `batchSize`, `getMore`
   cursor ids, `killCursors` ids and similar option fields sent as Int64
   (as the Rust driver does) are rejected. We unwrap them to plain ints in
   command option positions only; values inside documents, filters and
   updates keep their Int64 type.
2. Replies: `cursor.id` is a plain Python int, which pymongo's BSON encoder
   writes as Int32; the Rust driver requires Int64. We wrap it in `Int64`.
   Error replies lacking `code` (which the Rust driver cannot parse) get 8.

Usage: python launcher.py [--host 127.0.0.1] [--port 27017] [--data-dir DIR]
Without --data-dir data lives in memory; with it, in DIR/database.sqlite.
Logs go to stderr. SIGTERM/SIGINT shut the server down cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from bson.int64 import Int64

import mongoeco.wire.proxy as proxy_mod
from mongoeco.core.bson_scalars import BsonInt64
from mongoeco.engines.memory import MemoryEngine
from mongoeco.engines.sqlite import SQLiteEngine
from mongoeco.wire.proxy import AsyncMongoEcoProxyServer

log = logging.getLogger("mongo-standin")

# Keys of command bodies whose values are user data and must keep their types.
_DATA_KEYS = frozenset(
    {
        "documents", "filter", "query", "update", "q", "u",
        "sort", "projection", "fields", "hint", "let", "collation", "pipeline",
        "key", "partialFilterExpression", "validator", "arrayFilters", "c",
    }
)
# Pipeline stages whose scalar argument is an option, not data.
_STAGE_SCALARS = frozenset({"$limit", "$skip"})


def _plain(value):
    return value.value if isinstance(value, BsonInt64) else value


def _normalize_options(doc: dict) -> None:
    """Unwrap BsonInt64 option values of a command (sub)document, in place."""
    for key, value in list(doc.items()):
        if key in _DATA_KEYS:
            continue
        if isinstance(value, BsonInt64):
            doc[key] = value.value
        elif isinstance(value, dict):
            _normalize_options(value)  # e.g. cursor: {batchSize}, writeConcern
        elif isinstance(value, list):
            # e.g. killCursors ids; createIndexes specs (expireAfterSeconds);
            # update/delete statements (limit, multi; their q/u are skipped)
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    _normalize_options(item)
                else:
                    value[i] = _plain(item)
    for stage in doc.get("pipeline") or ():
        if isinstance(stage, dict):
            for name in _STAGE_SCALARS & stage.keys():
                stage[name] = _plain(stage[name])


def _patch_request_decoder(name: str) -> None:
    original = getattr(proxy_mod, name)

    def decode(*args, **kwargs):
        request = original(*args, **kwargs)
        body = request.body if hasattr(request, "body") else request.query
        if isinstance(body, dict):
            _normalize_options(body)
        return request

    setattr(proxy_mod, name, decode)


def _fix_reply(document: dict) -> dict:
    cursor = document.get("cursor")
    if isinstance(cursor, dict) and type(cursor.get("id")) is int:
        cursor["id"] = Int64(cursor["id"])
    if document.get("ok") in (0, 0.0):
        # The Rust driver cannot parse an error reply without `code` and hides
        # errmsg; some mongoeco shape errors lack it, so add UnknownError (8).
        document.setdefault("code", 8)
        log.info("command failed: code=%s %s", document.get("code"), document.get("errmsg"))
    return document


def _patch_reply_encoders() -> None:
    encode_msg = proxy_mod.encode_op_msg_response
    encode_reply = proxy_mod.encode_op_reply
    proxy_mod.encode_op_msg_response = lambda document, **kw: encode_msg(_fix_reply(document), **kw)
    proxy_mod.encode_op_reply = lambda documents, **kw: encode_reply(
        [_fix_reply(d) for d in documents], **kw
    )


def apply_patches() -> None:
    _patch_request_decoder("decode_op_msg")
    _patch_request_decoder("decode_op_query")
    _patch_reply_encoders()


async def serve(host: str, port: int, data_dir: str | None) -> None:
    if data_dir:
        os.makedirs(data_dir, exist_ok=True)
        engine = SQLiteEngine(os.path.join(data_dir, "database.sqlite"), executor_workers=1)
    else:
        engine = MemoryEngine()
    server = AsyncMongoEcoProxyServer(engine=engine, host=host, port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    address = await server.start()
    log.info("listening on %s:%s (%s); uri %s", address.host, address.port,
             f"sqlite in {data_dir}" if data_dir else "in memory", address.uri)
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.close()
    log.info("stopped")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=27017)
    parser.add_argument("--data-dir", help="persist in DIR/database.sqlite (default: in memory)")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    apply_patches()
    asyncio.run(serve(args.host, args.port, args.data_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
