"""The backend cycle: observe every backend, plan against the desired state, act, record.

`cycle` runs one pass (`BackendCycle`) through its phases: `observation` probes the fleet,
`plan` is the pure planner over `planview`'s views, `execution` applies the plan, `recording`
writes and publishes the states `conditions` builds; `failures` logs a step that failed.
`probing` keeps per-backend probe bookkeeping (`resumption` rebuilds it after a restart),
`reuse` hands back what a steady fleet has not changed, `status` persists observed states, and
`refreshes` brings one backend's status up to date when a download on it ends.

Called by `runtimestate.state`. Reads the desired state, the adapters and the queue; never the
resolver.
"""
