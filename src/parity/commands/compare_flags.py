"""The comparison flags of ``parity diff``, ``localize``, ``bisect`` and ``calibrate``, defined once.

Each flag maps onto one keyword of :func:`parity.compare_traces`: ``--config`` onto ``config``,
``--tolerances`` onto ``noise_floor``, ``--dask`` onto ``scheduler``, and the others onto the config overrides of
:data:`parity.compare.config.OVERRIDES` (their help is the override's own doc). A verb names the
flags it takes; the decorated command receives them as one dict, ``compare``, holding only the
flags that were given, ready to pass on as ``**compare``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from ..compare.config import OVERRIDES

__all__ = ["compare_flags", "FLAGS"]


def _help(override: str) -> str:
    doc = OVERRIDES[override]
    return doc[0].upper() + doc[1:] + "."


#: flag name → (the compare_traces keyword it sets, its click option)
FLAGS: dict[str, tuple[str, Callable[[Callable[..., Any]], Callable[..., Any]]]] = {
    "config": ("config", click.option("--config", "config", type=click.Path(dir_okay=False),
                                      help="TOML config: tolerances, aliases, ignores.")),
    "rtol": ("rtol", click.option("--rtol", type=float, help=_help("rtol"))),
    "atol": ("atol", click.option("--atol", type=float, help=_help("atol"))),
    "strict": ("strict", click.option("--strict", is_flag=True, default=None, help=_help("strict"))),
    "tolerances": ("noise_floor", click.option("--tolerances", "noise_floor", type=click.Path(dir_okay=False),
                                               help="Noise floors from `parity calibrate`: a stage with a floor "
                                                    "passes within its margin.")),
    "dask": ("scheduler", click.option("--dask", "scheduler", metavar="SCHEDULER",
                                       help="Compare on a Dask cluster: a scheduler address (tcp://HOST:PORT) or "
                                            "local[:N] (N worker processes); same result (needs parity[dask]).")),
}


def compare_flags(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the comparison flags ``names`` (keys of :data:`FLAGS`, in ``--help`` order) to a click
    command, and hand them to it as ``compare=`` (a dict of the flags given).

    >>> @click.command()
    ... @compare_flags("config", "rtol")
    ... def cmd(compare):
    ...     click.echo(sorted(compare.items()))
    >>> from click.testing import CliRunner
    >>> CliRunner().invoke(cmd, ["--rtol", "1e-3"]).output
    "[('rtol', 0.001)]\\n"
    """
    keywords = [FLAGS[n][0] for n in names]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            given = {k: kwargs.pop(k) for k in keywords}
            return fn(*args, compare={k: v for k, v in given.items() if v is not None}, **kwargs)

        for n in reversed(names):
            command = FLAGS[n][1](command)
        return command

    return decorate
