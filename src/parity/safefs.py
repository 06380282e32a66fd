"""File-system safety rules shared by every reader, importer and writer.

The policy (docs/format.md, "Symbolic links"):

* **Readers and importers never follow a symbolic link out of the directory they were given.**
  A link that stays inside it is fine; one that resolves outside is refused with the link named,
  unless the caller opts in (``follow_symlinks=True``, the CLI's ``--follow-symlinks``).
* **Writers never write through a symbolic link.** New files are created with
  ``O_CREAT | O_EXCL | O_NOFOLLOW`` under a temporary name nobody can guess in advance (a random
  suffix), then renamed over the final name, so a link planted at ``OUT.tmp`` or at the final
  name is never written through (a rename replaces the link itself, not its target).

>>> import os, tempfile
>>> d = tempfile.mkdtemp()
>>> atomic_write(os.path.join(d, "out.bin"), b"data")
>>> open(os.path.join(d, "out.bin"), "rb").read()
b'data'
>>> inside(d, os.path.join(d, "out.bin"))
True
"""

from __future__ import annotations

import os
import stat
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from .errors import ParityError, TraceError

__all__ = ["NOFOLLOW", "inside", "check_inside", "open_new", "temp_name", "atomic_file", "atomic_write",
           "refuse_symlink", "removed_on_error"]

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def inside(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """Whether ``path``, with every symbolic link resolved, lies inside directory ``root`` (resolved too).

    Fast path: a path written under ``root`` whose components below ``root`` are none of them
    links (one ``lstat`` each) is inside, whatever ``root`` itself resolves to; only paths with a
    link below ``root`` (or ``..``) are resolved in full.

    >>> import os
    >>> os.symlink("/etc", "out")
    >>> inside(".", "ref.trace"), inside(".", "../x"), inside(".", "out/passwd")
    (True, False, False)
    """
    root_s, path_s = os.fspath(root), os.fspath(path)
    rel = os.path.relpath(os.path.abspath(path_s), os.path.abspath(root_s))
    if rel == os.curdir:
        return True
    parts = rel.split(os.sep)
    if os.pardir not in parts:
        cur = root_s
        for part in parts:
            cur = os.path.join(cur, part)
            try:
                if stat.S_ISLNK(os.lstat(cur).st_mode):
                    break
            except OSError:  # missing: nothing to follow, so it cannot lead out
                return True
        else:
            return True
    r = os.path.realpath(root_s)
    p = os.path.realpath(path_s)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def check_inside(root: str | os.PathLike[str], path: str | os.PathLike[str], *, follow_symlinks: bool = False,
                 error: type[ParityError] = TraceError, what: str = "file") -> str:
    """Return ``path`` when it resolves inside ``root``; else raise ``error`` naming the link.

    With ``follow_symlinks=True`` every path is accepted (the caller has opted in).

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp(); os.symlink("/etc/passwd", os.path.join(d, "x.npy"))
    >>> check_inside(d, os.path.join(d, "x.npy"))
    Traceback (most recent call last):
    ...
    parity.errors.TraceError: .../x.npy: the file is a symbolic link to /etc/passwd, outside ...
    """
    path = os.fspath(path)
    if follow_symlinks or inside(root, path):
        return path
    raise error(f"the {what} is a symbolic link to {os.path.realpath(path)}, outside {os.fspath(root)}; "
                "parity does not follow links out of the directory it was given "
                "(pass follow_symlinks=True, or --follow-symlinks, to allow it).", path=path)


def refuse_symlink(path: str | os.PathLike[str], *, error: type[ParityError] = TraceError,
                   what: str = "directory") -> None:
    """Raise ``error`` when ``path`` itself is a symbolic link (a writer never writes through one).

    >>> import os
    >>> os.symlink("ref.trace", "link.trace")
    >>> refuse_symlink("ref.trace")  # a real directory: nothing happens
    >>> refuse_symlink("link.trace")
    Traceback (most recent call last):
    ...
    parity.errors.TraceError: link.trace: the directory is a symbolic link (to ref.trace); parity never writes ...
    """
    if os.path.islink(path):
        raise error(f"the {what} is a symbolic link (to {os.readlink(path)}); parity never writes through "
                    "a symbolic link. Remove it or write somewhere else.", path=path)


def temp_name(final: str | os.PathLike[str]) -> str:
    """A temporary name beside ``final`` that cannot be planted in advance (random suffix).

    >>> name = temp_name("out/report.html")
    >>> name.startswith("out/.report.html.") and name.endswith(".tmp"), name != temp_name("out/report.html")
    (True, True)
    """
    final = os.fspath(final)
    head, tail = os.path.split(final)
    return os.path.join(head, f".{tail}.{secrets.token_hex(8)}.tmp")


def open_new(path: str | os.PathLike[str], mode: int = 0o644) -> int:
    """Create ``path`` exclusively (``O_EXCL | O_NOFOLLOW``) for writing and return its descriptor.

    Fails with ``FileExistsError`` when anything (a file, a link) is already there.

    >>> import os
    >>> fd = open_new("new.bin"); os.write(fd, b"abc"); os.close(fd)
    3
    >>> open_new("new.bin")
    Traceback (most recent call last):
    ...
    FileExistsError: [Errno 17] File exists: 'new.bin'
    """
    return os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                   mode)


@contextmanager
def atomic_file(final: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Write a file atomically and safely: a fresh unguessable temp name, then a rename over ``final``.

    On an exception the temporary file is removed and ``final`` is left as it was.

    >>> with atomic_file("out.txt") as f:
    ...     _ = f.write(b"all or nothing")
    >>> open("out.txt", "rb").read()
    b'all or nothing'
    """
    final = os.fspath(final)
    tmp = temp_name(final)
    f = os.fdopen(open_new(tmp), "wb")
    with removed_on_error(tmp):
        with f:
            yield f
        os.replace(tmp, final)


@contextmanager
def removed_on_error(path: str | os.PathLike[str]) -> Iterator[None]:
    """Remove the file ``path`` (if it is there) when the block raises, then re-raise: a temporary
    file never outlives a failed write.

    >>> import os, tempfile
    >>> part = os.path.join(tempfile.mkdtemp(), "out.tmp")
    >>> with removed_on_error(part):
    ...     _ = open(part, "wb").write(b"half")
    ...     raise OSError("disk full")
    Traceback (most recent call last):
    ...
    OSError: disk full
    >>> os.path.exists(part)
    False
    """
    try:
        yield
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise


def atomic_write(final: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``final`` through :func:`atomic_file`.

    >>> atomic_write("out.bin", b"v1"); atomic_write("out.bin", b"v2")  # replaces the old file whole
    >>> open("out.bin", "rb").read()
    b'v2'
    """
    with atomic_file(final) as f:
        f.write(data)
