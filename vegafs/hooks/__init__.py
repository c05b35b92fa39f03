"""vegafs.hooks — Vega scripts on filesystem events: veto, transform, annotate.

What it owns: the hooks directory of a mount (compile every ``*.vega`` file,
watch it, refuse what does not compile while the previous version stays
active, record every version that became active in the store log); matching
events to hooks through an index (``globs``); running synchronous hooks inside
the operation with a budget, capabilities and a failure policy (``engine``);
the event objects hook code sees (``events``); the supervised after-hook
queue with its journal, retries, backoff and circuit breakers
(``supervisor``); spans of every run as JSON lines, SQLite and OTLP
(``trace``); and the seam into the filesystem, :class:`HookedFileSystem`
(``fs``), with the VFS driver hook code uses to reach the live tree
(``driver``).

What it must never do: let a hook block or crash the filesystem (every run is
bounded by its budget; every failure becomes an errno or a recorded span);
let a hook trigger hooks (non-reentrant: a hook's own VFS effects run with
hooks suppressed); give a hook authority it did not declare (capabilities,
plus reading its own event's file); import FUSE or the CLI.

Invariants:
- The active hook set is swapped whole: an operation sees the old set or the
  new one, never half a reload.
- A denial reaches the caller as its errno; a failure (trap, budget, bad
  return) is EIO with ``failure closed`` and is ignored with ``failure open``;
  both are traced.
- A synchronous hook's staged effects, and the journal records of the
  after-hooks an operation publishes, land in the same store record as the
  operation (a store batch), or not at all.
- An after-hook event is journaled in the store before it is queued and
  marked done after its last attempt: at-least-once across crashes.
- Every hooked operation is a span, the parent of its hook runs' spans.
- A read transform runs once per (file version, hook versions); ``stat``
  reports its size.
"""

from vegafs.hooks.engine import HookEngine, open_engine
from vegafs.hooks.fs import HookedFileSystem
from vegafs.hooks.trace import Tracer, trace_path

__all__ = ["HookEngine", "HookedFileSystem", "Tracer", "open_engine", "trace_path"]
