"""'Did you mean …?' for a name that is not one of the known ones (a task, an optimizer, a
filter value, a CLI option's value): one wording for the API's 422s and the CLI's errors."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: str, known: Iterable[str], *, n: int = 3) -> list[str]:
    """The known names nearest to `name` (case-insensitive), best first; empty when none is
    close (difflib's ratio ≥ 0.6)."""
    known = sorted(set(known))
    lowered = {k.lower(): k for k in known}
    return [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=n)]


def unknown_name(kind: str, name: str, known: Iterable[str]) -> str:
    """ "unknown optimizer 'adma'; did you mean 'adam'? (known: adam, adamw, sgd)"."""
    known = sorted(set(known))
    near = closest(name, known)
    hint = f"; did you mean {' or '.join(repr(m) for m in near)}?" if near else ""
    return f"unknown {kind} {name!r}{hint} (known: {', '.join(known)})"
