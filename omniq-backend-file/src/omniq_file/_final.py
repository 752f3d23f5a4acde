"""A completed task's record and its result in one file (the local-disk fast path).

On a local disk, creating a file is the dominant cost of a completion, so a task that
completes with its result on the same store writes one file holding both, hard-linked
as ``results/<id>`` and ``tasks/<id>`` (and as the result's TTL index entry
``rttl/<expires>-<id>``, whose content nobody reads; see
:meth:`LocalStore.write_linked`). Each reader takes its own part; data without the
header is a plain record or result, as every other write stores them. Layout::

    0xF1 "OQ" <result length: 4 bytes, big-endian> <result> <record>

The first byte differs from the core serializer's headers (0x00 plugin, 0x01 msgpack),
so the two kinds of file cannot be confused. Either name can later be replaced or
deleted on its own (a requeue rewrites the record, a TTL sweep deletes the result):
the other keeps the shared file and reads only its part of it.
"""

from __future__ import annotations

HEADER = b"\xf1OQ"
_SIZE = len(HEADER) + 4


def pack(record: bytes, result: bytes) -> bytes:
    """One file's bytes holding ``record`` and ``result``."""
    return HEADER + len(result).to_bytes(4, "big") + result + record


def record_of(data: bytes) -> bytes:
    """The record part of ``data`` (``data`` itself when it is a plain record)."""
    if not data.startswith(HEADER):
        return data
    return data[_SIZE + int.from_bytes(data[len(HEADER) : _SIZE], "big") :]


def result_of(data: bytes) -> bytes:
    """The result part of ``data`` (``data`` itself when it is a plain result)."""
    if not data.startswith(HEADER):
        return data
    return data[_SIZE : _SIZE + int.from_bytes(data[len(HEADER) : _SIZE], "big")]
