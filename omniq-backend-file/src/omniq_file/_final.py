"""A completed task's record and its result in one file (the local-disk fast path).

On a local disk, creating a file is the dominant cost of a completion, so a task that
completes with its result on the same store writes one file holding both, hard-linked
as ``results/<id>``, ``tasks/<id>`` and the ``done/`` token (and, for a single
completion, as the result's TTL index entry ``rttl/<expires>-<id>``; see
:meth:`LocalStore.finish`). Each reader takes its own part; data without the
header is a plain record or result, as every other write stores them. A header cut
short or a length past the end is a damaged file (ValueError), which readers report as
an undecodable record or result. Layout::

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


def _split(data: bytes) -> int:
    """Where the record starts in combined ``data`` (ValueError when the header is cut
    short or its length points past the end: a damaged or foreign file)."""
    if len(data) < _SIZE:
        raise ValueError(f"combined record/result file cut short ({len(data)} bytes)")
    end = _SIZE + int.from_bytes(data[len(HEADER) : _SIZE], "big")
    if end > len(data):
        raise ValueError(
            f"combined record/result file says its result has {end - _SIZE} bytes, "
            f"but the file has {len(data)}"
        )
    return end


def record_of(data: bytes) -> bytes:
    """The record part of ``data`` (``data`` itself when it is a plain record).
    ValueError when ``data`` is a damaged combined file."""
    if not data.startswith(HEADER):
        return data
    return data[_split(data) :]


def result_of(data: bytes) -> bytes:
    """The result part of ``data`` (``data`` itself when it is a plain result).
    ValueError when ``data`` is a damaged combined file."""
    if not data.startswith(HEADER):
        return data
    return data[_SIZE : _split(data)]
