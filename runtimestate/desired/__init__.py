"""The desired state: what operators declare, how it is checked, stored and read.

`spec` holds the values (backend, model and pool specs) and their validation, `names` the
model-name grammar, `schema` the tables, `store` (backends, models, the whole state read at
once), `poolstore` (pools) and `memberships` (the one writer of pool memberships) the async
functions over them, `suggestions` the names one edit from a missing one, `sources`,
`documents`, `manifest` and `deletion` the declarative files (``apply -f``/``delete -f``/
``export``), `rotation` the re-encryption of stored keys. The package itself is the whole
desired state read at once (`DesiredState`, from `fleet`), which the backend cycle and the
resolver read.

Called by the CLI, the backend cycle and the resolver's mirror. Knows nothing of observation,
downloads or routing.
"""

from runtimestate.desired.fleet import DesiredState

__all__ = ["DesiredState"]
