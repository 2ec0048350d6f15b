"""The resolver's answer for one call, or the OpenAI error saying why there is none.

`resolve` asks for the call's model (a model or an adapter name) with the capability its route
needs, by the policy and session the call carries (`steering`), Ready backends first and
Degraded ones after them as a last resort. When nothing qualifies: 404 ``model_not_found``
when no backend serves the model, 400 when the model cannot do what the route asks (an
embedding model on ``/v1/chat/completions``), 503 with ``Retry-After`` when its providers are
cooling down or not ready. Called by `forwarding`; pure apart from the resolver's own
bookkeeping.
"""

from __future__ import annotations

import math

from gateway import envelopes, inbound
from runtimestate import resolver

_WHAT = {"chat": "chat completions", "prompt": "completions", "embed": "embeddings"}


def resolve(r: resolver.Resolver, call: inbound.Call) -> resolver.Resolution:
    """The resolution for ``call``; raises `envelopes.Refusal` when there is none."""
    try:
        request = resolver.Request(
            models=(call.model,),
            capability=call.capability,
            allow_degraded=True,
            session=call.session,
            policy=resolver.Policy(call.policy or resolver.Policy.LEAST_LOADED),
        )
        return r.resolve(request)
    except resolver.InvalidRequest as exc:
        raise envelopes.Refusal(400, str(exc), param="model") from None
    except resolver.NoAvailableModels as exc:
        raise envelopes.Refusal(
            404,
            f"{exc}; GET /v1/models lists the models the gateway can route to",
            envelopes.NOT_FOUND,
            code="model_not_found",
            param="model",
        ) from None
    except resolver.NoSatisfactoryModel as exc:
        raise _unsatisfied(call, exc) from None


def _unsatisfied(call: inbound.Call, exc: resolver.NoSatisfactoryModel) -> envelopes.Refusal:
    reasons = {e.reason for e in exc.exclusions}
    if reasons == {resolver.Reason.CAPABILITY_MISSING}:
        return envelopes.Refusal(
            400,
            f"{exc}: this model does not serve {_WHAT[call.capability]}",
            param="model",
            code="model_not_supported",
        )
    waits = [e.retry_in_s for e in exc.exclusions if e.retry_in_s is not None]
    retry = max(1, math.ceil(min(waits))) if waits else 1
    return envelopes.Refusal(
        503, str(exc), envelopes.UNAVAILABLE, headers={"Retry-After": str(retry)}
    )
