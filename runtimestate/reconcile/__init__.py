"""The backend cycle: observe every backend, plan against the desired state, act, record.

`cycle` runs one pass (`BackendCycle`), `plan` is the pure planner over `planview`'s views,
`conditions` builds each backend's state, `probing` keeps per-backend probe bookkeeping,
`reuse` hands back what a steady fleet has not changed, `status` persists observed states,
and `refreshes` brings one backend's status up to date when a download on it ends.

Called by `runtimestate.state`. Reads the desired state, the adapters and the queue; never the
resolver.
"""
