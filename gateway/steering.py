"""How one request is routed: its resolver policy and session key, from its headers or its key.

A request may name the resolver policy (``X-Llmctl-Policy: sticky``) and a session key
(``X-Llmctl-Session: chat-42``, which the ``sticky`` policy hashes so that a conversation keeps
its provider); without the header, the key's own default policy (``llmctl key create
--policy``) applies, and without that the resolver's default. `steer` returns the `inbound.Call`
carrying both, or raises `envelopes.Refusal` (400) naming the header and the choices. Called by
`application` after the key was admitted; pure: it reads headers, nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from gateway import access, envelopes, inbound
from runtimestate import echo
from runtimestate.resolver import policies

POLICY_HEADER = "X-Llmctl-Policy"
SESSION_HEADER = "X-Llmctl-Session"
MAX_SESSION_CHARS = 256
CHOICES = "|".join(p.value for p in policies.Policy)
_POLICIES = frozenset(p.value for p in policies.Policy)


def steer(call: inbound.Call, headers: Mapping[str, str], grant: access.Grant) -> inbound.Call:
    """``call`` with the policy and session its headers (or its key) ask for."""
    named = headers.get(POLICY_HEADER, "").strip().lower()
    policy = named or (grant.key.spec.policy if grant.key is not None else None)
    if policy is not None and policy not in _POLICIES:
        raise envelopes.Refusal(
            400, f"{POLICY_HEADER} {echo.quoted(policy)} is not one of {CHOICES}", param="policy"
        )
    session = headers.get(SESSION_HEADER, "").strip() or None
    if session is not None and len(session) > MAX_SESSION_CHARS:
        raise envelopes.Refusal(
            400, f"{SESSION_HEADER} is over {MAX_SESSION_CHARS} characters; send a shorter key"
        )
    if policy == policies.Policy.STICKY and session is None:
        raise envelopes.Refusal(
            400,
            f"the sticky policy needs a session key: send {SESSION_HEADER} (any text that "
            "names the conversation), or another policy",
        )
    if policy is None and session is None:
        return call
    return dataclasses.replace(call, policy=policy, session=session)
