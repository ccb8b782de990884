"""Reader for the IDX format of MNIST and Fashion-MNIST (plain or gzip-compressed).

An IDX file is a 4-byte magic number, then one big-endian uint32 per dimension, then the
values in C order::

    magic = 0x00 0x00 <type code> <ndim>       e.g. 00 00 08 03 = uint8, 3 dimensions
    dims  = ndim x uint32 (big-endian)        e.g. 10000 28 28
    data  = prod(dims) values                  e.g. 7,840,000 bytes

so the length of a valid file is known exactly from its header: a truncated or padded file
is detected before any value is used. The md5 published for these data sets is that of the
*decompressed* bytes (mirrors re-compress the .gz files), so that is what ``read_idx`` checks.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

import numpy as np

from course_lib.data.errors import DataFileError

__all__ = ["read_idx", "parse_idx", "read_payload", "md5_hex"]

# IDX type code -> numpy dtype (big-endian where it matters)
_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
           0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_GZIP_MAGIC = b"\x1f\x8b"


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def read_payload(path: str | os.PathLike, fix: str | None = None) -> bytes:
    """The file's bytes, gunzipped if the file starts with the gzip magic (whatever its name)."""
    path = Path(path)
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:  # EOFError: archive cut short
        raise DataFileError(path, f"truncated or corrupt gzip data ({err})", fix) from None


def parse_idx(data: bytes, path: str | os.PathLike = "<bytes>", fix: str | None = None) -> np.ndarray:
    """Decode IDX bytes into an array, checking the magic number and the exact length."""
    if len(data) < 4:
        raise DataFileError(path, f"too short to be an IDX file ({len(data)} bytes)", fix)
    zero, code, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or code not in _DTYPES or not 1 <= ndim <= 4:
        raise DataFileError(path, f"bad IDX magic number {data[:4].hex()} (expected 0000 + type + ndim, "
                            f"e.g. 00000803 for images)", fix)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFileError(path, f"truncated IDX header ({len(data)} bytes, need {header})", fix)
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _DTYPES[code]
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        problem = f"{what}: header {dims} needs {expected:,} bytes, file has {len(data):,}"
        raise DataFileError(path, problem, fix)
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return values.astype(dtype.newbyteorder("="), copy=True)  # native order, writable


def read_idx(path: str | os.PathLike, md5: str | None = None, fix: str | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain). ``md5``: expected md5 of the decompressed bytes.

    Raises ``DataFileError`` (naming the file and ``fix``) for a truncated or corrupt file,
    a bad magic number, a length that disagrees with the header, or a checksum mismatch.
    """
    data = read_payload(path, fix)
    values = parse_idx(data, path, fix)  # structural checks first: they give the clearer message
    if md5 is not None and md5_hex(data) != md5:
        raise DataFileError(path, f"md5 of the decompressed bytes is {md5_hex(data)}, expected {md5} "
                            "(a damaged or different file)", fix)
    return values
