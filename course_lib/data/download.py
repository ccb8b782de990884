"""Downloads that never leave a half-written file, and fail fast on a machine without network.

``fetch(urls, dest, md5=...)`` tries each mirror in turn. The bytes stream into a temporary
file beside ``dest``; only when the download is complete *and* its md5 matches is the file
renamed to ``dest`` (``os.replace`` is atomic on one file system). Any failure removes the
temporary file, so an interrupted download leaves nothing behind.

No network: the first failed connection is remembered for the rest of the process, so a
notebook that loads three data sets waits at most once (a DNS failure takes milliseconds, a
connection timeout ``TIMEOUT_S`` seconds). ``COURSE_OFFLINE=1`` skips the network entirely.
"""
from __future__ import annotations

import hashlib
import os
import socket
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from course_lib.data.errors import DataFileError

__all__ = ["fetch", "offline_reason", "NetworkUnavailable", "reset_network_memo", "TIMEOUT_S"]

TIMEOUT_S = 5.0        # connect / read timeout per attempt
_CHUNK = 1 << 20       # stream 1 MiB at a time
_network_down: str | None = None  # why the network failed, once it has (memo for this process)


class NetworkUnavailable(OSError):
    """No mirror could be reached (no network, or ``COURSE_OFFLINE=1``)."""


def offline_reason() -> str | None:
    """Why downloads are off in this process (``COURSE_OFFLINE`` or an earlier failure), else None."""
    if os.environ.get("COURSE_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return "COURSE_OFFLINE=1 is set"
    return _network_down


def reset_network_memo() -> None:
    """Forget an earlier network failure (e.g. after plugging the cable back in)."""
    global _network_down
    _network_down = None


def md5_of_file(path: Path, decompress: bool) -> str:
    """md5 of the file's bytes, or of its gunzipped bytes when ``decompress`` and it is gzip."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        gz = decompress and f.read(2) == b"\x1f\x8b"
        f.seek(0)
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gz else None
        while chunk := f.read(_CHUNK):
            digest.update(inflate.decompress(chunk) if inflate else chunk)
        if inflate is not None:
            digest.update(inflate.flush())
            if not inflate.eof:
                raise DataFileError(path, "truncated gzip data", None)
    return digest.hexdigest()


def _stream(response, out, label: str) -> int:
    total = int(response.headers.get("Content-Length") or 0) if getattr(response, "headers", None) else 0
    done = 0
    while chunk := response.read(_CHUNK):
        out.write(chunk)
        done += len(chunk)
        if total > 8 * _CHUNK and sys.stderr.isatty():
            end = "\n" if done == total else ""
            print(f"\r  {label}: {done / 2**20:.0f} / {total / 2**20:.0f} MiB", end=end, file=sys.stderr)
    if total and done != total:
        raise OSError(f"connection closed after {done:,} of {total:,} bytes")
    return done


def fetch(
    urls: Sequence[str],
    dest: str | os.PathLike,
    *,
    md5: str | None = None,
    md5_of_decompressed: bool = True,
    opener: Callable | None = None,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Download the first mirror in ``urls`` that works to ``dest`` and verify it.

    Args:
        md5: expected md5; of the gunzipped bytes when ``md5_of_decompressed`` (MNIST's
            published sums), else of the file as downloaded (CIFAR-10's tar.gz).
        opener: ``urllib.request.urlopen`` by default (tests pass a fake one).
    Raises:
        NetworkUnavailable: no mirror reachable (remembered for the rest of the process).
        DataFileError: the download completed but its md5 is wrong (nothing is kept).
    """
    global _network_down
    reason = offline_reason()
    if reason:
        raise NetworkUnavailable(f"downloads are off: {reason}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    opener = opener or urllib.request.urlopen
    errors: list[str] = []
    reachable = False  # did any server answer (even with an HTTP error)?
    for url in urls:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out, opener(url, timeout=timeout) as response:
                reachable = True
                print(f"downloading {url}", file=sys.stderr)
                _stream(response, out, dest.name)
            if md5 is not None and (got := md5_of_file(Path(tmp), md5_of_decompressed)) != md5:
                raise DataFileError(dest, f"the download from {url} has md5 {got}, expected {md5}; "
                                    "nothing was kept", "try again later or another mirror")
            os.replace(tmp, dest)
            return dest
        except urllib.error.HTTPError as err:  # the server answered: the network works
            reachable = True
            errors.append(f"{url}: HTTP {err.code} {err.reason}")
        except (urllib.error.URLError, OSError) as err:
            errors.append(f"{urllib.parse.urlsplit(url).hostname}: {getattr(err, 'reason', err)}")
            if isinstance(getattr(err, "reason", err), (TimeoutError, socket.timeout)) and not reachable:
                break  # a timeout means a silent network: do not wait again for each mirror
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    if not reachable:
        _network_down = f"no network ({errors[0]})"
        raise NetworkUnavailable(_network_down)
    raise NetworkUnavailable(f"no mirror could provide {dest.name}: " + "; ".join(errors))
