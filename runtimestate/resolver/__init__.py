"""The resolver library: pick a provider (backend + model) for a request from the runtime state.

``from runtimestate import resolver`` then ``resolver.Resolver`` and ``resolver.Request`` is the
public face. Inside: `engine` (the `Resolver`: snapshots, in-flight counts, outcomes),
`demand` (the request), `resolution` (provider and answer values), `candidates` (the index
built once per snapshot), `policies` (the ranking), `signals` (per-candidate load lists),
`cooldown` (the per-provider breaker and latency record), `ledger` (what callers report:
in flight, outcomes, profiles), `exchange` and `bulletin` (outcomes shared on NATS), `profiles`
(learned figures saved and restored), `diagnosis` (why nothing qualified), and `mirror`
(another process's view of the runtime state, from the database and NATS).

Called by applications, ``llmctl resolve`` and the gateway. Reads snapshots, never the planner
or the download worker; selection (`candidates`, `policies`, `resolution`) is pure.
"""

from runtimestate.resolver.diagnosis import NoAvailableModels, NoSatisfactoryModel, ResolveError
from runtimestate.resolver.engine import Resolver
from runtimestate.resolver.policies import Policy
from runtimestate.resolver.profiles import ProfileError
from runtimestate.resolver.resolution import (
    Exclusion,
    InvalidRequest,
    Provider,
    Reason,
    Request,
    Resolution,
)

__all__ = [
    "Exclusion",
    "InvalidRequest",
    "NoAvailableModels",
    "NoSatisfactoryModel",
    "Policy",
    "ProfileError",
    "Provider",
    "Reason",
    "Request",
    "Resolution",
    "ResolveError",
    "Resolver",
]
