"""Stable seeds: the same parts give the same seed in every process and Python version.

Python's `hash()` of a str is salted per process (PYTHONHASHSEED), so it must not derive seeds; a
truncated SHA-256 of the parts' reprs is stable and spreads nearby inputs apart.
"""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A seed in [0, 2**63) from e.g. (round, question_id, rollout); parts are str/int/float/bytes/None.

    Parts are joined unambiguously (type and repr of each), so ("1", 2) and (1, "2") differ.
    """
    digest = hashlib.sha256()
    for part in parts:
        if not isinstance(part, (str, int, float, bytes, type(None))):
            raise TypeError(f"derive_seed takes str/int/float/bytes/None parts, got {type(part).__name__}")
        text = f"{type(part).__name__}:{part!r}".encode()
        digest.update(len(text).to_bytes(8, "big") + text)
    return int.from_bytes(digest.digest()[:8], "big") >> 1
