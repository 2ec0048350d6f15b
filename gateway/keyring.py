"""The gateway's view of the keys: find the key a request presents, in constant time.

Built by the gateway from `gateway.keystore.active` (and rebuilt when keys change); called
for every request with the secret from ``Authorization: Bearer ...``. Pure: no I/O.

The secret is hashed first and the hash looked up, so how long a lookup takes depends only on
the hash, which an attacker cannot steer towards a stored one; the final comparison is
`hmac.compare_digest` all the same. A revoked key is never found.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from gateway import keys


class Keyring:
    """The usable keys by the SHA-256 of their secrets."""

    def __init__(self, stored: Iterable[keys.Key]) -> None:
        self._by_hash = {key.secret_sha256: key for key in stored if not key.revoked}

    def __len__(self) -> int:
        return len(self._by_hash)

    def lookup(self, presented: str) -> keys.Key | None:
        """The key whose secret is ``presented``; None for an unknown or revoked one."""
        if not presented.startswith(keys.SCHEME):
            return None
        hashed = keys.digest(presented)
        found = self._by_hash.get(hashed)
        if found is None or not hmac.compare_digest(found.secret_sha256, hashed):
            return None
        return found
