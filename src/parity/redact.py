"""The one rule for keeping secrets out of everything parity writes or prints.

Evidence bundles (``commands.txt``), trace metadata (the recorded command line and program
arguments) and terminal output all pass through these functions, so a secret given on a command
line is never stored or echoed:

* :func:`redact_args` — a command line as an argument list: the value of an option named like a
  secret (``--password X``, ``--token=X``, ``--api-key X``, ``--secret``, ``--hf-token``...), a
  ``NAME=value`` argument whose name is secret-like (``HF_TOKEN=...``, ``AWS_SECRET_ACCESS_KEY=...``,
  ``*_KEY=...``, ``PASSWORD=...``, ``db.password=...``), and anything :func:`redact_text` hides.
* :func:`redact_text` — free text (a line of a program's stderr, a message): the above, plus
  ``Authorization: ...`` header values, ``Bearer <token>``, and the password of a URL
  (``https://user:<redacted>@host``).
* :func:`redact_mapping` — an environment or metadata mapping: values under secret-like names are
  replaced; other strings go through :func:`redact_text`, lists through :func:`redact_args`.

A name is secret-like when one of its parts (split at ``-``, ``_``, ``.`` and camelCase) is
``password``, ``passwd``, ``passphrase``, ``secret``, ``token``, ``auth``, ``authorization``,
``credential(s)`` or ``apikey``, or ends with one of them (``hftoken``), or two parts read
``api key``, ``access key``, ``private key``, ``secret key`` or ``auth key``; for an environment
variable (an upper-case ``NAME``) also any name ending in ``_KEY``. Tokenizer options
(``--pad-token``, ``--bos-token``, ``--max-tokens``, ``--tokenizer``) are not secrets. Short
flags such as ``-p`` are ambiguous (port, parallelism) and are kept.

>>> redact_args(["prog", "--password=hunter2", "--token", "abc", "--steps", "10", "HF_TOKEN=xyz"])
['prog', '--password=<redacted>', '--token', '<redacted>', '--steps', '10', 'HF_TOKEN=<redacted>']
>>> redact_text("GET https://bob:hunter2@example.com/x with Authorization: Bearer abc.def")
'GET https://bob:<redacted>@example.com/x with Authorization: <redacted>'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .limits import MAX_NESTING

__all__ = ["REDACTED", "redact_args", "redact_text", "redact_mapping", "is_secret_name"]

#: What a secret is replaced by.
REDACTED = "<redacted>"

_SECRET_PARTS = {"password", "passwd", "passphrase", "secret", "secrets", "token", "auth", "authorization",
                 "credential", "credentials", "apikey", "passwort", "pass"}
_SECRET_SUFFIXES = ("password", "passwd", "passphrase", "secret", "token", "apikey", "credentials")
_SECRET_PAIRS = {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"), ("auth", "key"),
                 ("client", "secret")}
# "token" next to these is a tokenizer setting (--pad-token "<pad>", --max-tokens 100), not a secret.
_TOKENIZER_WORDS = {"pad", "bos", "eos", "unk", "sep", "cls", "mask", "special", "start", "end", "max", "min", "num",
                    "n", "new", "add", "first", "last", "image", "audio", "vision", "decoder", "prefix", "suffix"}
_NOT_SECRET = {"tokenizer", "tokenizers", "tokens", "tokenize", "passes", "bypass", "author", "authors"}

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[-_.\s]+")
_OPTION = re.compile(r"^(--?)([A-Za-z][A-Za-z0-9_.-]*)$")
_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)=(.*)$", re.S)
_LONG_OPTION = re.compile(r"^--[A-Za-z]")
_WORD = re.compile(r"^([\"'(\[{]*)(.*?)([\"',;:)\]}]*)$", re.S)  # a word and the quotes/punctuation around it

_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]*):[^\s/@]*@")
_AUTH_HEADER = re.compile(r"(?i)\b((?:proxy-)?authorization\s*[:=]\s*)(?:\"[^\"\n]*\"|'[^'\n]*'|[^\n\"']+)")
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)([A-Za-z0-9\-._~+/]+=*)")
_QUOTED_FIELD = re.compile(r"""(?i)(["'])([A-Za-z_][A-Za-z0-9_.-]*)\1(\s*[:=]\s*)(["'])(.*?)\4""")
_TEXT_ASSIGN = re.compile(r"(?<![A-Za-z0-9_.-])(-{0,2}[A-Za-z_][A-Za-z0-9_.-]*)(=)([^\s&;,\"']+)")


def _parts(name: str) -> list[str]:
    return [p for p in _SPLIT.split(_CAMEL.sub("_", name).lower()) if p]


def is_secret_name(name: str, *, env: bool = False) -> bool:
    """Whether an option, variable or field ``name`` is secret-like (see the module docstring).

    ``env=True`` also counts an upper-case ``NAME`` ending in ``_KEY`` (``OPENAI_API_KEY``,
    ``STRIPE_KEY``).

    >>> is_secret_name("--hf-token"), is_secret_name("--pad-token"), is_secret_name("--tokenizer")
    (True, False, False)
    >>> is_secret_name("AWS_SECRET_ACCESS_KEY", env=True), is_secret_name("SORT_KEY"), is_secret_name("SORT_KEY", env=True)
    (True, False, True)
    """
    parts = _parts(name.lstrip("-"))
    if not parts:
        return False
    if env and name.isupper() and parts[-1] == "key" and len(parts) > 1:
        return True
    for i, p in enumerate(parts):
        if p in _NOT_SECRET:
            continue
        if p == "token" or p == "tokens":
            if p == "token" and not (i > 0 and parts[i - 1] in _TOKENIZER_WORDS):
                return True
            continue
        if p == "pass" and len(parts) > 1:  # --pass X alone is a password; --skip-pass is not
            continue
        if p in _SECRET_PARTS:
            return True
        if p.endswith(_SECRET_SUFFIXES) and p not in _NOT_SECRET:
            return True
        if i + 1 < len(parts) and (p, parts[i + 1]) in _SECRET_PAIRS:
            return True
    return False


def redact_args(argv: Sequence[str]) -> list[str]:
    """``argv`` with every secret replaced by ``<redacted>``; every other argument kept exactly.

    ``--secret-option VALUE`` hides ``VALUE`` (unless it is itself a ``--long-option``),
    ``--secret-option=VALUE`` and ``SECRET_NAME=VALUE`` keep the name, and any argument also goes
    through :func:`redact_text` (URL passwords, bearer tokens).

    >>> redact_args(["capture", "run", "--token", "abc", "--api-key=xyz", "--rtol", "1e-3", "-x"])
    ['capture', 'run', '--token', '<redacted>', '--api-key=<redacted>', '--rtol', '1e-3', '-x']
    """
    out: list[str] = []
    hide_next = False
    for raw in argv:
        a = str(raw)
        if hide_next:
            hide_next = False
            if not _LONG_OPTION.match(a):
                out.append(REDACTED)
                continue
        m = _OPTION.match(a)
        if m and is_secret_name(m.group(2)):
            out.append(a)
            hide_next = True
            continue
        opt, eq, _value = a.partition("=")
        if eq and ((_OPTION.match(opt) and is_secret_name(opt)) or (_ASSIGN.match(a) and is_secret_name(opt, env=True))):
            out.append(f"{opt}={REDACTED}")
            continue
        out.append(redact_text(a))
    return out


def _redact_quoted(m: re.Match[str]) -> str:
    if not is_secret_name(m.group(2), env=True):
        return m.group(0)
    return f"{m.group(1)}{m.group(2)}{m.group(1)}{m.group(3)}{m.group(4)}{REDACTED}{m.group(4)}"


def _redact_bearer(m: re.Match[str]) -> str:
    token = m.group(3)
    # "Bearer abc" is a token; "the bearer of bad news" is prose: a lower-case word after a
    # lower-case "bearer" is kept unless it is long or has digits or punctuation.
    if m.group(1) == "bearer" and token.isalpha() and token.islower() and len(token) < 8:
        return m.group(0)
    return m.group(1) + m.group(2) + REDACTED


def _redact_assign(m: re.Match[str]) -> str:
    if not is_secret_name(m.group(1), env=True):
        return m.group(0)
    return f"{m.group(1)}={REDACTED}"


def redact_text(text: str) -> str:
    """``text`` with secrets replaced by ``<redacted>``: URL passwords, ``Authorization:`` values,
    ``Bearer <token>``, ``"password": "..."`` fields, ``name=value`` with a secret-like name, and
    the word after a secret-like ``--option``.

    >>> redact_text('curl -H "Authorization: Bearer xyz" "https://api.example.com/?access_token=abc&x=1"')
    'curl -H "Authorization: <redacted>" "https://api.example.com/?access_token=<redacted>&x=1"'
    """
    if not text:
        return text
    s = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)
    s = _AUTH_HEADER.sub(lambda m: m.group(1) + REDACTED, s)
    s = _BEARER.sub(_redact_bearer, s)
    s = _QUOTED_FIELD.sub(_redact_quoted, s)
    s = _TEXT_ASSIGN.sub(_redact_assign, s)
    # "--password hunter2" inside free text: hide the word after a secret-like long option.
    pieces = re.split(r"(\s+)", s)
    hide = False
    for i, piece in enumerate(pieces):
        if not piece or piece.isspace():
            continue
        lead, core, trail = _WORD.match(piece).groups()  # type: ignore[union-attr]
        if hide:
            hide = False
            if core and not _LONG_OPTION.match(core) and core != REDACTED:
                pieces[i] = lead + REDACTED + trail
                continue
        m = _OPTION.match(core)
        if m and m.group(1) == "--" and is_secret_name(m.group(2)):
            hide = True
    return "".join(pieces)


def redact_mapping(env: Mapping[str, Any], _depth: int = 0) -> dict[str, Any]:
    """A copy of ``env`` (environment variables or metadata) with secrets replaced.

    A value under a secret-like name becomes ``<redacted>``; other strings go through
    :func:`redact_text`, lists of strings through :func:`redact_args`, nested mappings through this
    function (to :data:`parity.limits.MAX_NESTING` levels; deeper values are replaced whole).

    >>> redact_mapping({"HF_TOKEN": "abc", "HOME": "/home/u", "argv": ["p", "--password", "x"]})
    {'HF_TOKEN': '<redacted>', 'HOME': '/home/u', 'argv': ['p', '--password', '<redacted>']}
    """
    out: dict[str, Any] = {}
    for k, v in env.items():
        if isinstance(k, str) and is_secret_name(k, env=True) and v is not None and not isinstance(v, (bool, Mapping)):
            out[k] = REDACTED
        else:
            out[k] = _redact_value(v, _depth + 1)
    return out


def _redact_value(v: Any, depth: int) -> Any:
    if isinstance(v, str):
        return redact_text(v)
    if depth > MAX_NESTING and isinstance(v, (Mapping, list, tuple)):
        return REDACTED
    if isinstance(v, Mapping):
        return redact_mapping(v, depth)
    if isinstance(v, (list, tuple)):
        if all(isinstance(x, str) for x in v):
            red = redact_args(v)
        else:
            red = [_redact_value(x, depth + 1) for x in v]
        return red if isinstance(v, list) else tuple(red)
    return v
