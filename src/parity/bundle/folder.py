"""The evidence bundle folder: create it, record commands and their outputs, close (seal) and
verify it; and the wrapper commands run in (see the package docstring for the layout and rules)."""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import ParityError, UsageError
from .cmdline import command_line
from .environment import collect_environment
from ._files import dig, json_bytes, read_json, replace, sha256, short_value, walk, write_new

__all__ = ["Bundle", "BundleCheck", "BundleCommand", "new_bundle", "open_bundle", "close_bundle", "verify_bundle",
           "bundle_command", "bundle_option", "MARKER", "COMMANDS", "ENV", "SUMMARY", "CHECKSUMS", "BUNDLE_FORMAT",
           "BUNDLE_SCHEMA_VERSION"]

MARKER, COMMANDS, ENV, SUMMARY, CHECKSUMS = "bundle.json", "commands.txt", "env.json", "summary.md", "sha256.txt"
BUNDLE_FORMAT = "parity-bundle"
BUNDLE_SCHEMA_VERSION = 1

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_VERB_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_EXT_RE = re.compile(r"^[a-z0-9]{1,8}$")

T = TypeVar("T")


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _iso(t: _dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the bundle ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BundleCheck:
    """What :func:`verify_bundle` found. Truthy when every file matches ``sha256.txt``.

    Attributes:
        path: the bundle folder.
        checked: files listed in ``sha256.txt``.
        changed: listed files whose content differs.
        missing: listed files that are gone.
        added: files (or links) present but not listed.
        malformed: lines of ``sha256.txt`` that cannot be read, or that name a path outside the bundle.

    Example:
        >>> check = BundleCheck("b", 3, changed=("01-diff.json",))
        >>> bool(check), check.problems()
        (False, ['changed: 01-diff.json'])
    """

    path: str
    checked: int
    changed: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    malformed: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing or self.added or self.malformed)

    def __bool__(self) -> bool:
        return self.ok

    def problems(self) -> list[str]:
        """One line per problem, e.g. ``changed: 01-diff.json``."""
        return ([f"changed: {p}" for p in self.changed] + [f"missing: {p}" for p in self.missing]
                + [f"added: {p}" for p in self.added] + [f"malformed: {p}" for p in self.malformed])


@dataclass
class BundleCommand:
    """One command recorded in a bundle: its number and the outputs it wrote there.

    Example:
        >>> cmd = new_bundle("x", ".", probe_torch=False).begin_command("diff", "parity diff a b")
        >>> cmd.index, cmd.output_name("json"), os.path.basename(cmd.write("md", "# report", label="full"))
        (1, '01-diff.json', '01-diff-full.md')
    """

    bundle: Bundle
    index: int
    verb: str
    outputs: list[str] = field(default_factory=list)

    def output_name(self, ext: str, label: str | None = None) -> str:
        """The file name for an output, e.g. ``01-diff.json`` (``label`` gives ``01-diff-LABEL.json``)."""
        if not _EXT_RE.match(ext) or (label is not None and not _VERB_RE.match(label)):
            raise UsageError(f"bundle outputs are named NN-verb[-label].ext; {label!r} / {ext!r} is not allowed.")
        return f"{self.index:02d}-{self.verb}{'-' + label if label else ''}.{ext}"

    def write(self, ext: str, data: str | bytes, label: str | None = None) -> str:
        """Write an output into the bundle (a new file, never an overwrite) and return its path."""
        name = self.output_name(ext, label)
        path = os.path.join(self.bundle.path, name)
        try:
            write_new(path, data.encode("utf-8") if isinstance(data, str) else data)
        except FileExistsError as e:
            raise UsageError(f"{name} already exists in the bundle; outputs are never overwritten.", path=self.bundle.path) from e
        self.outputs.append(name)
        return path


    def write_traces(self, paths: Sequence[str], text: str) -> None:
        """Keep what a command that wrote traces produced: its terminal text, and each trace's
        ``manifest.json`` (which holds every data file's checksum, so the bundle pins the traces
        without copying them); of a sharded trace, its ``shards.json`` and every rank's
        ``manifest.json``. A trace that was not written (a failed capture) is skipped."""
        self.write("txt", text)
        for i, path in enumerate(paths):
            label = f"manifest{i}" if len(paths) > 1 else "manifest"
            manifest, shards = os.path.join(path, "manifest.json"), os.path.join(path, "shards.json")
            if os.path.isfile(manifest):
                with open(manifest, "rb") as f:
                    self.write("json", f.read(), label=label)
            elif os.path.isfile(shards):
                with open(shards, "rb") as f:
                    self.write("json", f.read(), label=f"{label}-shards")
                for name in sorted(os.listdir(path)):
                    rank_manifest = os.path.join(path, name, "manifest.json")
                    if re.fullmatch(r"rank-[0-9]{5}\.trace", name) and os.path.isfile(rank_manifest):
                        with open(rank_manifest, "rb") as f:
                            self.write("json", f.read(), label=f"{label}-rank{int(name[5:10])}")


class Bundle:
    """An evidence bundle folder (see the module docstring). Create with :func:`new_bundle`.

    Example:
        >>> b = new_bundle("x", ".", probe_torch=False, command="parity bundle new x")
        >>> b.name, b.closed, [(c["index"], c["line"], c["exit"]) for c in b.commands()]
        ('x', False, [(1, 'parity bundle new x', '0')])
    """

    def __init__(self, path: str, info: Mapping[str, Any]):
        self.path = path
        self.info = dict(info)

    @property
    def name(self) -> str:
        return str(self.info.get("name"))

    @property
    def closed(self) -> bool:
        return bool(self.info.get("closed"))

    def __repr__(self) -> str:
        return f"<Bundle {self.path!r}{' closed' if self.closed else ''}>"

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def commands(self) -> list[dict[str, Any]]:
        """The recorded commands: ``{"index", "time", "line", "exit", "outputs"}`` each."""
        out: list[dict[str, Any]] = []
        try:
            with open(self._file(COMMANDS), encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return out
        by_index: dict[int, dict[str, Any]] = {}
        pending: tuple[int, str] | None = None
        for line in lines:
            m = re.match(r"^# \[(\d+)\] (\S+)$", line)
            if m:
                pending = (int(m.group(1)), m.group(2))
                continue
            m = re.match(r"^# \[(\d+)\] exit (\S+)(?:; wrote (.*))?$", line)
            if m and int(m.group(1)) in by_index:
                rec = by_index[int(m.group(1))]
                rec["exit"] = m.group(2)
                rec["outputs"] = m.group(3).split() if m.group(3) else []
                continue
            if line and not line.startswith("#") and pending is not None:
                rec = {"index": pending[0], "time": pending[1], "line": line, "exit": None, "outputs": []}
                by_index[pending[0]] = rec
                out.append(rec)
                pending = None
        return out

    def begin_command(self, verb: str, line: str | None = None) -> BundleCommand:
        """Append a command line to ``commands.txt`` and number it.

        Args:
            verb: the command's name for its output files (``diff``, ``show``...).
            line: the command line (default: :func:`command_line`, the running ``parity`` command).

        Raises:
            UsageError: the bundle is closed.
        """
        if not _VERB_RE.match(verb):
            raise UsageError(f"a bundle command verb is lower-case letters, digits and '-', not {verb!r}.")
        self._check_open()
        line = command_line() if line is None else line.replace("\n", " ")
        path = self._file(COMMANDS)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "r+", encoding="utf-8") as f:
            _lock(f)
            f.seek(0)
            index = 1 + sum(1 for ln in f.read().splitlines() if ln and not ln.startswith("#"))
            f.write(f"# [{index}] {_iso(_utc_now())}\n{line}\n")
            f.flush()
        return BundleCommand(self, index, verb)

    def end_command(self, cmd: BundleCommand, exit_code: int | str) -> None:
        """Append the exit status and the outputs of ``cmd`` to ``commands.txt``."""
        wrote = f"; wrote {' '.join(cmd.outputs)}" if cmd.outputs else ""
        fd = os.open(self._file(COMMANDS), os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(f"# [{cmd.index}] exit {exit_code}{wrote}\n")

    def _check_open(self) -> None:
        if self.closed:
            raise UsageError("this bundle is closed (sha256.txt seals it); create a new one with `parity bundle new NAME`.",
                             path=self.path)

    def close(self) -> BundleCheck:
        """Write ``summary.md`` and ``sha256.txt``; afterwards the bundle takes no more commands.

        Returns:
            :func:`verify_bundle` of the sealed bundle (always ok right after closing).

        Raises:
            UsageError: the bundle is already closed, or holds something other than regular files.
        """
        self._check_open()
        files, odd = walk(self.path)
        if odd:
            raise UsageError(f"the bundle holds links or special files ({', '.join(odd)}); remove them before closing.",
                             path=self.path)
        now = _utc_now()
        self.info.update(closed=True, closed_at=_iso(now))
        replace(self._file(MARKER), json_bytes(self.info))
        write_new(self._file(SUMMARY), _summary(self).encode("utf-8"))
        files, _ = walk(self.path)
        lines = [f"{sha256(self._file(rel))}  {rel}\n" for rel in files if rel != CHECKSUMS]
        write_new(self._file(CHECKSUMS), "".join(lines).encode("utf-8"))
        return verify_bundle(self.path)


def _lock(f: Any) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: commands are appended without a lock
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)


def _summary(b: Bundle) -> str:
    try:
        env: Any = read_json(b._file(ENV), "env.json")
    except (OSError, ParityError):  # a missing or damaged env.json leaves the facts unknown
        env = {}
    torch_version = dig(env, "torch", "version")
    git_sha = dig(env, "git", "sha")
    out = [f"# Evidence bundle: {b.name}", "",
           f"- created: {b.info.get('created')}", f"- closed: {b.info.get('closed_at')}",
           f"- parity {dig(env, 'parity')}, Python {dig(env, 'python', 'version')}, "
           f"numpy {dig(env, 'packages', 'numpy')}"
           + (f", torch {torch_version} (CUDA available: {dig(env, 'torch', 'cuda_available')})" if torch_version else ""),
           f"- platform: {dig(env, 'platform', 'platform')}; CPU: {dig(env, 'cpu', 'model')} "
           f"× {dig(env, 'cpu', 'count')}",
           f"- git: {git_sha if git_sha is not None else 'not a git checkout'}"
           + (" (dirty tree)" if dig(env, "git", "dirty") else ""),
           "", "## Commands", ""]
    cmds = b.commands()
    if not cmds:
        out.append("No command was recorded.")
    for c in cmds:
        out.append(f"{c['index']}. `{c['line']}` — exit {c['exit'] if c['exit'] is not None else 'unknown (interrupted?)'}"
                   + (f"; outputs: {', '.join(c['outputs'])}" if c["outputs"] else ""))
        for name in c["outputs"]:
            if name.endswith(".json"):
                result = _diff_result(b._file(name))
                if result:
                    out.append(f"   - {result}")
    out += ["", "## Files", "", "Every file is listed with its sha256 in `sha256.txt`; check them with "
            "`parity bundle verify DIR` (or `sha256sum -c sha256.txt` inside the folder).", ""]
    return "\n".join(out)


def _diff_result(path: str) -> str | None:
    try:
        doc = read_json(path, "diff output")
    except (OSError, ParityError):
        return None
    if not isinstance(doc, dict) or doc.get("schema") != "parity.diff":
        return None
    verdict = "parity holds" if doc.get("passed") is True else "divergence found"
    first = doc.get("first_divergence")
    return (f"{verdict}: {dig(doc, 'summary', 'pass')} pass, {dig(doc, 'summary', 'fail')} fail"
            + (f"; first divergence `{first}`" if isinstance(first, str) and first else ""))


def _stamp(now: _dt.datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ")


def new_bundle(name: str, root: str | os.PathLike[str] = ".", *, device: str | None = None, dtype: str | None = None,
               probe_torch: bool = True, command: str | None = None) -> Bundle:
    """Create ``ROOT/reports/NAME/<UTC stamp>/`` with ``bundle.json``, ``env.json`` and ``commands.txt``.

    The folder is created exclusively: when a bundle of that name was already created in the same
    second, the stamp gets a ``-2``, ``-3``... suffix; nothing existing is reused or overwritten.

    Args:
        name: the investigation's name, one path component of letters, digits and ``._-``.
        root: where ``reports/`` lives (default: the current directory).
        device, dtype: what the runs declare they use, recorded in env.json (``"cuda:0"``, ``"bf16"``).
        probe_torch: ask torch (when installed) about CUDA for env.json.
        command: the command line to record first (``parity bundle new`` passes its own).

    Returns:
        The new :class:`Bundle`.

    Raises:
        UsageError: ``name`` is not a safe folder name.

    Example:
        >>> b = new_bundle("rope-bug", ".", probe_torch=False)
        >>> sorted(os.listdir(b.path)), b.path.split(os.sep)[-3:-1]
        (['bundle.json', 'commands.txt', 'env.json'], ['reports', 'rope-bug'])
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise UsageError(f"bundle name {name!r} must be one folder name of letters, digits, '.', '_' and '-' "
                         "(at most 100 characters, not starting with '.' or '-').")
    parent = os.path.join(os.fspath(root), "reports", name)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the bundle folder ({e.strerror}); reports/{name} must be a directory.",
                         path=parent) from e
    now = _utc_now()
    stamp = _stamp(now)
    for attempt in range(1, 1000):
        folder = stamp if attempt == 1 else f"{stamp}-{attempt}"
        path = os.path.join(parent, folder)
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        break
    else:
        raise UsageError(f"could not find a free folder name under {parent} for stamp {stamp}.")
    info = {"format": BUNDLE_FORMAT, "schema_version": BUNDLE_SCHEMA_VERSION, "name": name, "created": _iso(now),
            "closed": False}
    write_new(os.path.join(path, MARKER), json_bytes(info))
    env = {"recorded_at": _iso(now), **collect_environment(cwd=os.fspath(root), device=device, dtype=dtype,
                                                            probe_torch=probe_torch)}
    write_new(os.path.join(path, ENV), json_bytes(env))
    write_new(os.path.join(path, COMMANDS), b"")
    bundle = Bundle(path, info)
    if command is not None:
        bundle.end_command(bundle.begin_command("bundle", command), 0)
    return bundle



def open_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Open an existing bundle folder.

    Raises:
        UsageError: ``path`` is not a bundle made by ``parity bundle new``.

    Example:
        >>> open_bundle(new_bundle("x", ".", probe_torch=False).path).name
        'x'
        >>> open_bundle("ref.trace")
        Traceback (most recent call last):
        ...
        parity.errors.UsageError: ref.trace: is not an evidence bundle (no bundle.json); ...
    """
    path = os.fspath(path)
    marker = os.path.join(path, MARKER)
    try:
        info = read_json(marker, "bundle.json")
    except FileNotFoundError:
        raise UsageError("is not an evidence bundle (no bundle.json); create one with `parity bundle new NAME` and "
                         "pass the folder it prints.", path=path) from None
    if not isinstance(info, dict) or info.get("format") != BUNDLE_FORMAT:
        raise UsageError(f'does not say "format": "{BUNDLE_FORMAT}"; this is not a parity bundle.', path=marker)
    version = info.get("schema_version")
    if type(version) is not int or not 1 <= version <= BUNDLE_SCHEMA_VERSION:
        raise UsageError(f"has schema_version {short_value(version)}; this parity reads version {BUNDLE_SCHEMA_VERSION} "
                         "(upgrade parity if the bundle is newer).", path=marker)
    for key, kinds in (("name", (str,)), ("created", (str,)), ("closed", (bool,)), ("closed_at", (str,))):
        if key in info and info[key] is not None and type(info[key]) not in kinds:
            raise UsageError(f'"{key}" must be a {kinds[0].__name__}, not {short_value(info[key])}; the file is corrupt.',
                             path=marker)
    return Bundle(path, info)


def close_bundle(path: str | os.PathLike[str]) -> BundleCheck:
    """Seal a bundle: write ``summary.md`` and ``sha256.txt`` (see :meth:`Bundle.close`).

    Example:
        >>> b = new_bundle("x", ".", probe_torch=False)
        >>> check = close_bundle(b.path)
        >>> bool(check), check.checked, open_bundle(b.path).closed
        (True, 4, True)
    """
    return open_bundle(path).close()


_SHA_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


def verify_bundle(path: str | os.PathLike[str]) -> BundleCheck:
    """Check every file of a closed bundle against ``sha256.txt``.

    Returns:
        A :class:`BundleCheck` listing changed, missing and added files (truthy when all match).
        Paths in ``sha256.txt`` that point outside the bundle are reported as malformed and never read.

    Raises:
        UsageError: ``path`` is not a bundle, or it has no ``sha256.txt`` (it was never closed).

    Example:
        >>> b = new_bundle("x", ".", probe_torch=False); _ = close_bundle(b.path)
        >>> with open(os.path.join(b.path, "env.json"), "a") as f:
        ...     _ = f.write(" ")
        >>> verify_bundle(b.path).problems()
        ['changed: env.json']
    """
    bundle = open_bundle(path)
    sums = os.path.join(bundle.path, CHECKSUMS)
    try:
        with open(sums, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise UsageError("has no sha256.txt: the bundle is still open; close it with `parity bundle close DIR` first.",
                         path=bundle.path) from None
    listed: dict[str, str] = {}
    malformed = []
    for n, line in enumerate(lines, 1):
        m = _SHA_LINE.match(line)
        rel = m.group(2) if m else None
        parts = rel.split("/") if rel else []
        if (not m or not rel or rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts)
                or rel == CHECKSUMS or rel in listed):
            malformed.append(f"sha256.txt line {n}: {line[:120]!r}")
            continue
        listed[rel] = m.group(1)
    files, odd = walk(bundle.path)
    present = set(files)
    changed, missing = [], []
    for rel, digest in sorted(listed.items()):
        if rel not in present:
            missing.append(rel)
        elif sha256(os.path.join(bundle.path, rel)) != digest:
            changed.append(rel)
    added = sorted((present - set(listed) - {CHECKSUMS}) | set(odd))
    return BundleCheck(bundle.path, len(listed), tuple(changed), tuple(missing), tuple(added), tuple(malformed))


# -- for commands --------------------------------------------------------------------------------

def bundle_option(f: Callable[..., T]) -> Callable[..., T]:
    """Click decorator: add ``--bundle DIR`` to a command (pass the value to :func:`bundle_command`).

    Example:
        >>> import click
        >>> @click.command()
        ... @bundle_option
        ... def show(bundle_dir):
        ...     pass
        >>> [p.opts for p in show.params]
        [['--bundle']]
    """
    import click

    return click.option("--bundle", "bundle_dir", type=click.Path(file_okay=False), default=None,
                        help="Record this command line in the evidence bundle DIR (from `parity bundle new`) and write "
                             "its outputs there.")(f)


def _exit_code(e: BaseException) -> int:
    """The exit status ``parity`` gives for ``e`` (see :mod:`parity.exitcodes`)."""
    from ..exitcodes import for_exception

    return for_exception(e)


@contextmanager
def bundle_command(bundle_dir: str | os.PathLike[str] | None, verb: str,
                   line: str | None = None) -> Iterator[BundleCommand | None]:
    """Run a command's body as a recorded bundle command (a no-op when ``bundle_dir`` is None).

    The command line is appended to ``commands.txt`` before the body runs, so an interrupted run
    is still on record; afterwards its exit status and output files are appended.

    Args:
        bundle_dir: the bundle folder (``--bundle DIR``), or None.
        verb: names the outputs, ``NN-VERB.EXT``.
        line: the command line to record (default: the running ``parity`` command, see
            :func:`command_line`); a Python script passes its own, e.g. ``"python investigate.py"``.

    Raises:
        UsageError: ``bundle_dir`` is not a bundle, or it is closed.

    Example:
        >>> from parity.bundle import invocation
        >>> b = new_bundle("x", ".", probe_torch=False)
        >>> with invocation(["show", "ref.trace"]), bundle_command(b.path, "show") as cmd:
        ...     _ = cmd.write("txt", "table")
        >>> [c["line"] for c in b.commands()], cmd.outputs
        (['parity show ref.trace'], ['01-show.txt'])
    """
    if bundle_dir is None:
        yield None
        return
    bundle = open_bundle(bundle_dir)
    cmd = bundle.begin_command(verb, line)
    try:
        yield cmd
    except BaseException as e:
        bundle.end_command(cmd, _exit_code(e))
        raise
    bundle.end_command(cmd, 0)
