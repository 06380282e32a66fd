"""Stage keys: hierarchical, safe names such as ``layers.3.attn_probs`` or ``k_frac[phi_tic=4]``.

Grammar (documented in docs/format.md)::

    key        := name indices? occurrence?
    name       := segment ("." segment)*
    segment    := [A-Za-z0-9_][A-Za-z0-9_+\\-:@]*
    indices    := "[" index ("," index)* "]"          # sorted by index name
    index      := ident "=" value                     # value: [A-Za-z0-9_+\\-.:@]+
    occurrence := "#" digits                          # 2nd, 3rd ... time a key is tapped

Keys never name files (data files are numbered), and the grammar has no ``/``, ``\\``, ``..``,
whitespace or control characters, so no key can become a path outside a trace directory.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping

from ..errors import StageKeyError
from ..limits import MAX_INT_DIGITS

__all__ = ["validate_key", "make_key", "split_key", "MAX_KEY_LENGTH", "NAME_RE", "IDENT_RE"]

MAX_KEY_LENGTH = 512
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_+\-:@]*"
_VALUE = r"[A-Za-z0-9_+\-.:@]+"
_INDEX = rf"[A-Za-z_][A-Za-z0-9_]*={_VALUE}"
_KEY_RE = re.compile(rf"^(?P<name>{_SEGMENT}(?:\.{_SEGMENT})*)(?:\[(?P<idx>{_INDEX}(?:,{_INDEX})*)\])?(?:#(?P<occ>[0-9]+))?$")
#: A stage name (a key without indices or occurrence).
NAME_RE = re.compile(rf"^{_SEGMENT}(?:\.{_SEGMENT})*$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")
#: An identifier (an index name), as in Python: a letter or _, then letters, digits and _.
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INT_BOUND = 10**MAX_INT_DIGITS


def validate_key(key: object) -> str:
    """Return ``key`` if it is a well-formed, safe stage key.

    Raises:
        StageKeyError: the key is not a string, is too long, or breaks the grammar above.

    >>> validate_key("layers.3.attn_probs")
    'layers.3.attn_probs'
    >>> validate_key("../etc/passwd")
    Traceback (most recent call last):
    ...
    parity.errors.StageKeyError: stage "../etc/passwd": a stage key is dot-separated segments of letters, digits and _+-:@ with optional [name=value,...] indices and #N occurrence; it cannot contain "/", "\\", "..", spaces or control characters.
    """
    if not isinstance(key, str):
        raise StageKeyError(f"a stage key must be a string, not {type(key).__name__}.", stage=repr(key))
    if len(key) > MAX_KEY_LENGTH:
        raise StageKeyError(f"a stage key is at most {MAX_KEY_LENGTH} characters long.", stage=key[:60] + "...")
    if not _KEY_RE.match(key):
        raise StageKeyError(
            "a stage key is dot-separated segments of letters, digits and _+-:@ with optional "
            '[name=value,...] indices and #N occurrence; it cannot contain "/", "\\", "..", spaces or '
            "control characters.",
            stage=key,
        )
    return key


def _format_value(name: str, value: object, *, stage: str | None = None) -> str:
    """The text of one index value in a key; ``stage`` (the key's name) is named in errors.

    Values are ints (at most ``MAX_INT_DIGITS`` digits), finite floats, bools, or strings of
    letters, digits and ``_+-.:@``: anything else (NaN, infinity, a huge int, a separator such
    as ``,`` ``=`` ``]``) raises :class:`StageKeyError` here, when the key is made, and never
    later when the trace is written.
    """
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise StageKeyError(f'index "{name}" must be a finite number, not {float.__repr__(value)}.', stage=stage)
        text = float.__repr__(value)
    elif isinstance(value, (int, str)) or hasattr(value, "__index__"):
        if not isinstance(value, str):
            try:
                number = operator.index(value)  # type: ignore[arg-type]
            except TypeError as e:
                raise StageKeyError(f'index "{name}" must be an int, float, bool or str, not '
                                    f"{type(value).__name__}.", stage=stage) from e
            if not -_INT_BOUND < number < _INT_BOUND:
                raise StageKeyError(f'index "{name}" is an integer of more than {MAX_INT_DIGITS} digits; expected '
                                    f"an index of at most {MAX_INT_DIGITS} digits.", stage=stage)
        text = str(value)
    else:
        raise StageKeyError(f'index "{name}" must be an int, float, bool or str, not {type(value).__name__}.',
                            stage=stage)
    if not _VALUE_RE.match(text):
        raise StageKeyError(f'index value {text[:60]!r} of "{name}" may only use letters, digits and _+-.:@.',
                            stage=stage)
    return text


def make_key(name: str, indices: Mapping[str, object] | None = None, occurrence: int = 0) -> str:
    """Compose a key from a dotted name, indices (sorted by name) and an occurrence number.

    >>> make_key("k_frac", {"phi_tic": 4})
    'k_frac[phi_tic=4]'
    >>> make_key("x", {"step": 2, "layer": 0}, occurrence=1)
    'x[layer=0,step=2]#1'
    """
    if not isinstance(name, str) or not NAME_RE.match(name):
        validate_key(name)  # raises with the grammar message
        raise StageKeyError("a stage name cannot carry its own [indices] or #occurrence here.", stage=str(name))
    key = name
    if indices:
        for k in indices:
            if not isinstance(k, str) or not IDENT_RE.match(k):
                raise StageKeyError(f"index name {str(k)[:60]!r} must be an identifier.", stage=name)
        parts = [f"{k}={_format_value(k, indices[k], stage=name)}" for k in sorted(indices)]
        key += "[" + ",".join(parts) + "]"
    if occurrence:
        key += f"#{int(occurrence)}"
    return validate_key(key)


def split_key(key: str) -> tuple[str, dict[str, str], int]:
    """Split a key into (dotted name, indices as strings, occurrence).

    >>> split_key("k_frac[phi_tic=4]#2")
    ('k_frac', {'phi_tic': '4'}, 2)
    """
    m = _KEY_RE.match(validate_key(key))
    assert m is not None
    idx: dict[str, str] = {}
    if m.group("idx"):
        for part in m.group("idx").split(","):
            k, _, v = part.partition("=")
            idx[k] = v
    return m.group("name"), idx, int(m.group("occ") or 0)
