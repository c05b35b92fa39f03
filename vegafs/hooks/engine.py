"""The hook engine: loaded hooks, the directory watcher, dispatch, after-hooks.

One :class:`HookEngine` per mount. The filesystem side (vegafs.hooks.fs's
``HookedFileSystem``) asks it, for each operation, which hooks match
(:meth:`HookEngine.match`), runs the synchronous ones (:meth:`run_on`), and
publishes the event to after-hooks once the operation succeeded
(:meth:`publish_after`).

Loading: every ``*.vega`` file of the hooks directory is compiled (through
:mod:`vegafs.hooks.vega`); its hooks form the file's current version, named
by the hash of its source. :meth:`maybe_reload`, called on the operation
path, rescans the directory at most every :data:`RESCAN_INTERVAL_S` (one
``scandir`` plus a ``stat`` per file; nothing is read unless a file's size or
mtime changed). A file that fails to compile is *refused*: its errors are kept
for ``vegafs hooks list`` and logged, and its previous version stays active.
The new set of hooks replaces the old one in a single reference assignment,
so an operation sees either the old or the new set, never a mix. Each
version that becomes active is recorded in the store log once
(``annotate("hooks.version", ...)``: file, hash, source).

Running: each run gets a fresh VM runtime with the hook's budget and
capabilities (plus, implicitly, reading its own event's file and its
metadata), and the engine's VFS driver mounted at ``/``. A trap, a budget stop
or a bad return value is a *failure*: with ``failure closed`` the operation
gets EIO, with ``failure open`` it proceeds; either way a span records it.
Consecutive failures open the hook's circuit breaker; while open, the hook is
not run and its failure policy applies at once.

Non-reentrancy (seed 000 §2): while a hook runs, or while an after-hook's
VFS call executes on the filesystem thread, :attr:`HookEngine.suppressed` is
set and the filesystem runs no hooks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vegafs.hooks import vega
from vegafs.hooks.errnos import ERRNOS, errno_name
from vegafs.hooks.events import Decision, HookEvent, Output
from vegafs.hooks.globs import Glob, GlobError, GlobIndex, compile_glob
from vegafs.hooks.settings import EVENTS, HookSettings, SettingsError, parse_settings
from vegafs.hooks.supervisor import AfterQueue, Attempt, CircuitBreaker, Job
from vegafs.hooks.trace import (
    SpanSource,
    Tracer,
    hex_id,
    id_of,
    new_span_id,
    new_trace_id,
    span_source,
)
from vegafs.vm.caps import Capabilities, Grant
from vegafs.vm.runtime import Runtime
from vegafs.vm.vfs import Driver

log = logging.getLogger(__name__)

RESCAN_INTERVAL_S = 0.1
VERSION_KIND = "hooks.version"
JOURNAL_KIND = "hooks.after"
JOURNAL_DONE_KIND = "hooks.after.done"
_LATENCY_SAMPLES = 2048
_GLOB_CHARS = frozenset("*?[")
_CAPS_CACHE = 256
_SPAN_MASK = (1 << 64) - 1
_getrandbits = random.getrandbits


class Host(Protocol):
    """What the engine needs from the filesystem it serves."""

    def driver(self, *, from_worker: bool) -> Driver:
        """A VFS driver over the live tree, rooted at the mount root. With
        ``from_worker``, each call is carried to the filesystem's thread."""

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` where the filesystem and store may be touched (from any thread)."""


class RecordingDriver(Driver, Protocol):
    """A synchronous hook's driver (the host's ``staging_driver``): it records effects."""

    effects: list[Any]


class Store(Protocol):
    """The part of vegafs.store.Store the engine uses (journal and versions)."""

    def transaction(self) -> Any: ...

    def annotations(self, kind: str) -> list[tuple[int, bytes]]: ...


@dataclass
class HookStats:
    """Counters and a latency sample of one hook, for ``vegafs hooks list``."""

    runs: int = 0
    denies: int = 0
    traps: int = 0
    errors: int = 0
    last_failure: str | None = None  # message of the newest trap / budget stop / error
    latencies_us: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCY_SAMPLES))

    def percentile(self, q: float) -> float | None:
        if not self.latencies_us:
            return None
        ordered = sorted(self.latencies_us)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(eq=False)
class LoadedHook:
    """One hook of one version of one file, ready to run."""

    file: str
    name: str
    when: str
    event: str
    glob: Glob
    settings: HookSettings
    version: str
    decl: vega.HookDecl
    stats: HookStats
    breaker: CircuitBreaker
    state: str = "active"  # active | stopped | escalated
    caps_cache: dict[str, Capabilities] = field(default_factory=dict)
    uses_vfs: bool = True  # False: the run needs no driver (see vega.VFS_BUILTINS)
    transforms: bool = False  # a read hook whose code may write ev.output
    span_sources: dict[str, SpanSource] = field(default_factory=dict)  # per phase

    @property
    def key(self) -> str:
        return f"{self.file}:{self.name}"


@dataclass
class HookFile:
    """What the engine knows of one file of the hooks directory."""

    name: str
    stamp: tuple[int, int] = (0, 0)  # (mtime_ns, size) last seen
    version: str | None = None  # hash of the active version
    hooks: list[LoadedHook] = field(default_factory=list)
    error: str | None = None  # why the newest version was refused
    refused_version: str | None = None


@dataclass
class Verdict:
    """The outcome of the synchronous hooks of one operation."""

    allowed: bool = True
    errno: int = 0
    message: str = ""
    output: bytes | None = None  # a read hook's transform
    effects: list[tuple[Any, ...]] = field(default_factory=list)  # staged VFS effects


@dataclass(slots=True)
class _Run:
    """One run of one hook: what it decided and how it went."""

    decision: Decision | None
    status: str  # ok, denied, trap, budget, error, circuit_open
    kind: str = ""  # failure kind for retry filters: a trap kind, deny, error, circuit_open
    message: str = ""
    steps: int = 0
    latency_us: float = 0.0
    out_bytes: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)  # trace::event calls

    @property
    def failed(self) -> bool:
        return self.status not in ("ok", "denied")


class OpSpan:
    """A filesystem operation that runs hooks: the parent span of their runs.
    (A plain class: one is made per hooked operation, on the hot path.)"""

    __slots__ = ("event", "trace_id", "span_id", "t0_ns", "denied")

    def __init__(self, event: str) -> None:
        self.event = event
        ids = _getrandbits(192)  # both ids in one draw
        self.trace_id, self.span_id = ids >> 64, ids & _SPAN_MASK
        self.t0_ns = time.perf_counter_ns()
        self.denied = False  # a hook denied it (vs. the operation failing by itself)


#: Bound on the (event, path) -> hooks answers a hook set remembers.
_MATCH_CACHE = 16384


class _HookSet:
    """The active hooks, indexed, with a cache of match answers.

    Immutable apart from its cache: a reload builds a new set (so the cache
    never outlives the hooks it describes). The cache holds the answers for
    the paths of recent operations (a hot file is matched on every read and
    write); a new path costs one walk of the index.
    """

    __slots__ = ("on", "after", "events", "transforms", "_cache", "_below")

    def __init__(self, hooks: Sequence[LoadedHook] = ()) -> None:
        self.on: GlobIndex[LoadedHook] = GlobIndex(h for h in hooks if h.when == "on")
        self.after: GlobIndex[LoadedHook] = GlobIndex(h for h in hooks if h.when == "after")
        self.events = frozenset(h.event for h in hooks)
        self.transforms = any(h.transforms for h in hooks)  # any read transform at all?
        self._cache: dict[tuple[str, str], tuple[Sequence[LoadedHook], Sequence[LoadedHook]]] = {}
        self._below: dict[tuple[str, str], bool] = {}

    def below(self, event: str, directory: str) -> bool:
        """May a hook of ``event`` match a path directly inside ``directory``?"""
        key = (event, directory)
        found = self._below.get(key)
        if found is None:
            found = self.on.may_match_child(event, directory) or self.after.may_match_child(
                event, directory
            )
            if len(self._below) >= _MATCH_CACHE:
                self._below.clear()
            self._below[key] = found
        return found

    def match(self, event: str, path: str) -> tuple[Sequence[LoadedHook], Sequence[LoadedHook]]:
        """(synchronous hooks, after-hooks) of ``event`` on ``path``."""
        key = (event, path)
        found = self._cache.get(key)
        if found is None:
            found = (self.on.match(event, path), self.after.match(event, path))
            if len(self._cache) >= _MATCH_CACHE:
                self._cache.clear()
            self._cache[key] = found
        return found


def source_hash(data: bytes) -> str:
    """The version name of a hook file: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(data).hexdigest()[:16]


class HookEngine:
    """Loads, matches and runs hooks for one mount (see the module docstring)."""

    def __init__(
        self,
        hooks_dir: str | os.PathLike[str] | None,
        *,
        store: Store | None = None,
        tracer: Tracer | None = None,
        queue_capacity: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hooks_dir = Path(hooks_dir) if hooks_dir is not None else None
        self.store = store
        self.tracer = tracer
        self.host: Host | None = None
        self._staging: Callable[[list[Any]], RecordingDriver] | None = None  # the host's staging driver
        self._depths: dict[int, int] = {}  # thread id -> suppression depth (see suppressed)
        self._clock = clock
        self._files: dict[str, HookFile] = {}
        self._set = _HookSet()
        self._last_scan = float("-inf")
        self._scan_error: str | None = None
        self._lock = threading.RLock()  # serialises reloads (op path vs CLI/tests)
        self._recorded: set[str] = set()  # hashes whose source is in the log
        self._active_recorded: dict[str, str | None] = {}  # file -> last logged version
        self._stats: dict[str, HookStats] = {}
        self._journal_seq = 0
        self._queue_capacity = queue_capacity
        self._queue: AfterQueue | None = None
        self._drivers: dict[bool, Driver] = {}
        if store is not None:
            for _, payload in store.annotations(VERSION_KIND):
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    record = json.loads(payload)
                    self._active_recorded[record["file"]] = record["hash"]
                    if "source" in record:
                        self._recorded.add(record["hash"])

    @property
    def suppressed(self) -> int:
        """How deep this thread is inside hook code or a hook's own VFS call; no
        hooks fire while it is positive. Per thread: an after-hook running on
        the worker must not switch off the synchronous hooks of the operations
        the filesystem thread serves meanwhile. The common answer (no thread
        suppresses) costs one attribute read. No lock: a thread only ever
        changes its own entry, and single dict operations are atomic."""
        depths = self._depths
        if not depths:
            return 0
        return depths.get(threading.get_ident(), 0)

    def _enter_suppressed(self) -> int:
        me = threading.get_ident()
        self._depths[me] = self._depths.get(me, 0) + 1
        return me

    def _leave_suppressed(self, me: int) -> None:
        depth = self._depths[me] - 1
        if depth:
            self._depths[me] = depth
        else:
            del self._depths[me]

    # ------------------------------------------------------------------ lifecycle

    def attach(self, host: Host) -> None:
        """Connect the filesystem; starts the after-hook worker."""
        self.host = host
        self._staging = getattr(host, "staging_driver", None)
        if self._queue is None:
            self._queue = AfterQueue(
                self._run_job, self._job_finished, self._breaker_of, capacity=self._queue_capacity
            )

    def close(self) -> None:
        """Stop the worker (pending after-hooks stay journaled) and close the tracer."""
        if self._queue is not None:
            self._queue.close()
            self._queue = None
        if self.tracer is not None:
            self.tracer.close()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until no after-hook job waits or runs (tests, benchmarks)."""
        return self._queue is None or self._queue.wait_idle(timeout)

    # ------------------------------------------------------------------ loading

    def maybe_reload(self) -> None:
        """Rescan the hooks directory if the last scan is older than the interval."""
        if self._clock() - self._last_scan >= RESCAN_INTERVAL_S:
            self.reload()

    def reload(self) -> bool:
        """Rescan now; returns True when the active set of hooks changed."""
        with self._lock:
            self._last_scan = self._clock()
            if self.hooks_dir is None:
                return False
            seen: dict[str, tuple[int, int]] = {}
            try:
                with os.scandir(self.hooks_dir) as it:
                    for entry in it:
                        if entry.name.endswith(".vega") and not entry.name.startswith("."):
                            with contextlib.suppress(OSError):
                                st = entry.stat()
                                seen[entry.name] = (st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                pass  # no directory: no hooks (removing it unloads them)
            except OSError as exc:
                # Unreadable for now: keep what is loaded rather than silently
                # dropping every veto; say so once per distinct error.
                message = f"hooks directory {self.hooks_dir} unreadable: {exc.strerror}"
                if message != self._scan_error:
                    self._scan_error = message
                    log.error("hooks: %s; the loaded hooks stay active", message)
                return False
            self._scan_error = None
            changed = False
            for name in list(self._files):
                if name not in seen:
                    if self._files.pop(name).hooks:
                        changed = True
                    self._record_version(name, None, None)
                    log.info("hooks: %s removed", name)
            for name, stamp in sorted(seen.items()):
                known = self._files.setdefault(name, HookFile(name))
                if known.stamp != stamp:
                    known.stamp = stamp
                    changed |= self._load_file(known)
            if changed:
                self._rebuild()
            return changed

    def _load_file(self, hf: HookFile) -> bool:
        assert self.hooks_dir is not None
        try:
            data = (self.hooks_dir / hf.name).read_bytes()
        except OSError as exc:
            hf.error, hf.refused_version = f"{hf.name}: cannot read: {exc.strerror}", None
            return False
        version = source_hash(data)
        if version == hf.version:
            hf.error = hf.refused_version = None
            return False
        try:
            hooks = self.compile(data, hf.name, version)
        except vega.HookCompileError as exc:
            hf.error, hf.refused_version = str(exc), version
            log.error(
                "hooks: %s refused (previous version %s stays active):\n%s",
                hf.name,
                hf.version or "none",
                exc,
            )
            return False
        hf.version, hf.hooks, hf.error, hf.refused_version = version, hooks, None, None
        self._record_version(hf.name, version, data)
        log.info(
            "hooks: %s version %s active (%s)",
            hf.name,
            version,
            ", ".join(h.name for h in hooks) or "no hooks",
        )
        return True

    def compile(self, data: bytes, filename: str, version: str) -> list[LoadedHook]:
        """Compile one file's source into hooks; raises HookCompileError with
        every problem (compiler diagnostics, bad globs, bad settings)."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise vega.HookCompileError([f"{filename}: not UTF-8 text ({exc.reason})"]) from None
        decls = vega.compile_hooks(text, filename)
        hooks: list[LoadedHook] = []
        problems: list[str] = []
        for decl in decls:
            try:
                glob = compile_glob(decl.glob)
                settings = parse_settings(decl.settings)
                if decl.event not in EVENTS:
                    raise SettingsError(f"unknown event {decl.event!r}")
                Capabilities.parse(settings.capabilities)
            except (GlobError, SettingsError, ValueError) as exc:
                problems.append(f"{decl.position}: hook '{decl.name}': {exc}")
                continue
            key = f"{filename}:{decl.name}"
            stats = self._stats.setdefault(key, HookStats())
            hooks.append(
                LoadedHook(
                    filename,
                    decl.name,
                    decl.when,
                    decl.event,
                    glob,
                    settings,
                    version,
                    decl,
                    stats,
                    CircuitBreaker(settings.breaker),
                    uses_vfs=decl.uses_vfs,
                    transforms=decl.event == "read" and decl.writes_output,
                )
            )
        if problems:
            raise vega.HookCompileError(problems)
        return hooks

    def _record_version(self, name: str, version: str | None, data: bytes | None) -> None:
        """Log that ``name`` now runs ``version`` (None: the file was removed).

        One record per change of a file's active version; the source is
        included the first time a hash appears, so the log alone can show
        which hooks (and which code) were active at any logseq.
        """
        if self.store is None or self._active_recorded.get(name) == version:
            return
        record: dict[str, Any] = {"file": name, "hash": version}
        if version is not None and version not in self._recorded and data is not None:
            record["source"] = data.decode("utf-8", "replace")
        payload = json.dumps(record).encode()
        try:
            self._in_fs(lambda: self._annotate(VERSION_KIND, payload))
        except Exception:
            log.exception("hooks: could not record version %s of %s in the store", version, name)
            return
        self._active_recorded[name] = version
        if version is not None:
            self._recorded.add(version)

    def forget_missing(self) -> None:
        """Log the removal of files that were active when the store was last
        mounted but are no longer in the directory (call after the first reload)."""
        for name, version in list(self._active_recorded.items()):
            if version is not None and name not in self._files:
                self._record_version(name, None, None)

    def _rebuild(self) -> None:
        active = [h for f in sorted(self._files.values(), key=lambda f: f.name) for h in f.hooks]
        self._set = _HookSet(active)

    # ------------------------------------------------------------------ matching

    def match(self, event: str, path: str) -> Sequence[LoadedHook]:
        """Synchronous hooks for ``event`` on ``path`` (empty while suppressed)."""
        if self.suppressed:
            return ()
        return self._set.match(event, path)[0]

    def match_all(self, event: str, path: str) -> tuple[Sequence[LoadedHook], Sequence[LoadedHook]]:
        """(synchronous hooks, after-hooks) for ``event`` on ``path``; both
        empty while suppressed. One dictionary lookup for a recent path."""
        if self.suppressed:
            return (), ()
        return self._set.match(event, path)

    def wants(self, event: str) -> bool:
        """Cheap pre-check before a path is even computed: does any hook,
        synchronous or after, listen to ``event``? (Every filesystem operation
        asks this, with or without hooks: one clock read, one set lookup.)"""
        if self._clock() - self._last_scan >= RESCAN_INTERVAL_S:
            self.reload()
        return event in self._set.events and not self.suppressed

    def watches_inside(self, event: str, directory: str) -> bool:
        """May a hook of ``event`` watch a name inside ``directory`` (a path)?
        Namespace operations ask before building the child's path: with a
        thousand hooks elsewhere, the answer is one dictionary lookup."""
        return self._set.below(event, directory)

    def transforms(self, hooks: Sequence[LoadedHook]) -> bool:
        """Does any of ``hooks`` (matched synchronous hooks) transform reads?"""
        return self._set.transforms and any(h.transforms for h in hooks)

    # ------------------------------------------------------------------ running

    def _caps(self, hook: LoadedHook, path: str) -> Capabilities:
        """The hook's declared capabilities plus its implicit ones for ``path``:
        read the event's own file and its metadata, emit trace events. Cached
        per (hook, path): building a Capabilities merges grants, too slow to
        repeat on every write of a hot file."""
        cache = hook.caps_cache
        caps = cache.get(path)
        if caps is None:
            grants = list(Capabilities.parse(hook.settings.capabilities).grants)
            grants.append(Grant("trace::write"))
            if not _GLOB_CHARS & set(path):
                grants += [Grant("fs::read", (path,)), Grant("meta::read", (path,))]
            caps = Capabilities(grants)
            if len(cache) >= _CAPS_CACHE:
                cache.clear()
            cache[path] = caps
        return caps

    def _runtime(
        self,
        hook: LoadedHook,
        ev: HookEvent,
        events: list[dict[str, Any]],
        *,
        from_worker: bool,
        driver: Driver | None = None,
    ) -> Runtime:
        rt = Runtime(
            hook.settings.budget,
            self._caps(hook, ev.path),
            trace=events.append,
            stdout=_discard_text,
            stderr=_discard_text,
        )
        if driver is not None:
            rt.namespace.attach("/", driver, "vegafs://")
            return rt
        if not hook.uses_vfs:
            return rt
        driver = self._drivers.get(from_worker)
        if driver is None and self.host is not None:
            driver = self._drivers[from_worker] = self.host.driver(from_worker=from_worker)
        if driver is not None:
            rt.namespace.attach("/", driver, "vegafs://")
        return rt

    def run_on(
        self,
        hooks: Sequence[LoadedHook],
        ev: HookEvent,
        trace_id: int | None = None,
        parent_id: int | None = None,
    ) -> Verdict:
        """Run the synchronous ``hooks`` for ``ev`` in order; the first denial
        wins. Each run's span is a child of ``parent_id`` (the operation's span)."""
        verdict = Verdict()
        if trace_id is None:
            trace_id = new_trace_id()
        staging = self._staging
        for hook in hooks:
            if hook.state != "active":
                continue
            if hook.transforms:
                ev.output = Output()
            driver = staging(verdict.effects) if staging is not None and hook.uses_vfs else None
            run = self._invoke(hook, ev, from_worker=False, driver=driver)
            failed = run.failed
            if driver is not None and not failed:
                verdict.effects += driver.effects  # a failed run's effects are dropped
            if failed:
                run.decision = (
                    None
                    if hook.settings.failure_open
                    else Decision(False, ERRNOS["EIO"], run.message)
                )
            decision = run.decision
            if (
                (decision is None or decision.allowed)
                and ev.output is not None
                and ev.output.written
            ):
                verdict.output = bytes(ev.output.buffer)
                run.out_bytes = len(verdict.output)
            self._span(hook, ev, trace_id, parent_id, run)
            if decision is not None and not decision.allowed:
                log.info(
                    "hooks: %s denied %s %s: %s %s",
                    hook.key,
                    ev.event,
                    ev.path,
                    errno_name(decision.errno),
                    decision.message,
                )
                verdict.allowed = False
                verdict.errno, verdict.message = decision.errno, decision.message
                verdict.effects = []  # a denied operation takes its hooks' effects with it
                break
        return verdict

    def run_once(self, hook: LoadedHook, ev: HookEvent) -> _Run:
        """Run one hook for ``ev`` on this thread, without spans or failure
        policy (``vegafs hooks test``); read events get an ``ev.output``."""
        if ev.event == "read" and ev.output is None:
            ev.output = Output()
        return self._invoke(hook, ev, from_worker=False)

    def _invoke(
        self, hook: LoadedHook, ev: HookEvent, *, from_worker: bool, driver: Driver | None = None
    ) -> _Run:
        """Run ``hook.run(ev)`` once, account it, and say what happened."""
        if not hook.breaker.allow():
            return _Run(
                None,
                "circuit_open",
                "circuit_open",
                f"circuit open after {hook.breaker.failures} consecutive failures",
            )
        t0 = time.perf_counter()
        run = _Run(None, "ok")
        rt = self._runtime(hook, ev, run.events, from_worker=from_worker, driver=driver)
        # Suppression keeps a hook's own VFS effects from firing hooks; a hook
        # whose code reaches no VFS builtin has none to suppress.
        me = self._enter_suppressed() if hook.uses_vfs else None
        try:
            outcome = hook.decl.invoke(ev, rt)
            if outcome.trap is not None:
                run.status = "budget" if outcome.trap.is_budget else "trap"
                run.kind, run.message = outcome.trap.kind, str(outcome.trap)
            elif outcome.value is None or type(outcome.value) is Decision:
                run.decision = outcome.value
            else:
                run.status = run.kind = "error"
                run.message = (
                    f"run() returned a {type(outcome.value).__name__}, expected "
                    "allow() or deny(ERRNO, message)"
                )
        except Exception as exc:  # the VM never lets one through; still, never crash an op
            run.status = run.kind = "error"
            run.message = f"internal error: {type(exc).__name__}: {exc}"
            log.exception("hooks: %s raised", hook.key)
        finally:
            if me is not None:
                self._leave_suppressed(me)
            ev.end()
            rt.finish()
        run.steps = rt.meter.steps_used
        run.latency_us = (time.perf_counter() - t0) * 1e6
        stats = hook.stats
        stats.runs += 1
        stats.latencies_us.append(run.latency_us)
        if run.status == "ok":
            if hook.breaker.failures:
                hook.breaker.success()
            if run.decision is not None and not run.decision.allowed:
                stats.denies += 1
                run.status, run.kind = "denied", "deny"
                run.message = run.decision.message
        else:
            hook.breaker.failure()
            stats.last_failure = run.message
            if run.status in ("trap", "budget"):
                stats.traps += 1
            else:
                stats.errors += 1
        return run

    def _span(
        self,
        hook: LoadedHook,
        ev: HookEvent,
        trace_id: int,
        parent_id: int | None,
        run: _Run,
        *,
        attempt: int = 1,
        phase: str = "on",
    ) -> None:
        if self.tracer is None:
            return
        decision = run.decision
        denied = decision is not None and not decision.allowed
        source = hook.span_sources.get(phase)
        if source is None:
            source = hook.span_sources[phase] = span_source(
                hook.name, hook.version, hook.file, phase, hook.event
            )
        latency = run.latency_us
        self.tracer.record_row(  # a trace.Row, formatted by the tracer's flusher thread
            (
                trace_id,
                new_span_id(),
                parent_id,
                time.time_ns() - int(latency * 1000),
                source,
                ev.path,
                "deny" if denied else ("transform" if run.out_bytes else "allow"),
                errno_name(decision.errno) if denied and decision is not None else None,
                run.message,
                run.status,
                run.steps,
                run.out_bytes or ev.size,
                latency,
                attempt,
                attempt - 1,
                [e.get("msg", e.get("event")) for e in run.events] if run.events else None,
            )
        )

    def op_span(self, op: OpSpan, path: str, errno: int, message: str, nbytes: int) -> None:
        """Record the span of a filesystem operation that ran or published hooks
        (the parent of their spans): ``errno`` 0 if it succeeded."""
        if self.tracer is None:
            return
        latency_ns = time.perf_counter_ns() - op.t0_ns
        self.tracer.record_row(
            (
                op.trace_id,
                op.span_id,
                None,
                time.time_ns() - latency_ns,
                span_source(None, None, None, "op", op.event),
                path,
                "deny" if op.denied else "allow",
                errno_name(errno) if errno else None,
                message,
                "ok" if not errno else ("denied" if op.denied else "failed"),
                0,
                nbytes,
                latency_ns / 1000,
                1,
                0,
                None,
            )
        )

    # ------------------------------------------------------------------ after-hooks

    def publish_after(
        self, hooks: Sequence[LoadedHook], fields: dict[str, Any], op: OpSpan
    ) -> list[Job]:
        """Journal one job per active after-hook of ``hooks`` for the event
        ``fields`` (its plain data: event, path, uid, gid, pid and the event's
        numbers) and return them for :meth:`submit`. Called on the filesystem
        thread once the operation succeeded, inside its store batch: the
        operation and its journal records are one log record."""
        if self._queue is None:
            return []
        jobs = []
        for hook in hooks:
            if hook.state != "active":
                continue
            self._journal_seq += 1
            job_id = f"{time.time_ns():x}-{self._journal_seq}"
            jobs.append(
                Job(
                    job_id,
                    hook,
                    dict(fields),
                    hook.settings.retry,
                    trace_id=op.trace_id,
                    parent_id=op.span_id,
                )
            )
        self._journal(jobs)
        return jobs

    def submit(self, jobs: list[Job]) -> None:
        """Queue journaled jobs (after the operation's record is in the log)."""
        if not jobs or self._queue is None:
            return
        for job in jobs:
            if not self._queue.submit(job):
                log.warning(
                    "hooks: after-queue full; %s for %s stays journaled for the next mount",
                    job.hook.key,
                    job.event.get("path"),
                )

    def _journal(self, jobs: list[Job]) -> None:
        if self.store is None or not jobs:
            return
        payloads = [
            json.dumps(
                {
                    "id": j.job_id,
                    "file": j.hook.file,
                    "hook": j.hook.name,
                    "version": j.hook.version,
                    "event": j.event,
                    "trace_id": hex_id(j.trace_id, 32),
                    "parent_id": hex_id(j.parent_id, 16),
                }
            ).encode()
            for j in jobs
        ]
        try:
            with self.store.transaction() as t:
                for payload in payloads:
                    t.annotate(JOURNAL_KIND, payload)
        except Exception:
            log.exception("hooks: could not journal after-hook events")

    def replay_journal(self) -> int:
        """Queue every journaled after-hook job that never finished (a previous
        mount was killed): at-least-once delivery. Call once, after attach."""
        if self.store is None or self._queue is None:
            return 0
        self.maybe_reload()
        done = {payload.decode() for _, payload in self.store.annotations(JOURNAL_DONE_KIND)}
        by_key = {h.key: h for f in self._files.values() for h in f.hooks if h.when == "after"}
        count = 0
        for _, raw in self.store.annotations(JOURNAL_KIND):
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if entry.get("id") in done:
                continue
            hook = by_key.get(f"{entry.get('file')}:{entry.get('hook')}")
            if hook is None:
                log.warning(
                    "hooks: journaled %s/%s has no active hook; marking it done",
                    entry.get("file"),
                    entry.get("hook"),
                )
                self._mark_done(entry.get("id", ""))
                continue
            job = Job(
                entry["id"],
                hook,
                entry["event"],
                hook.settings.retry,
                trace_id=id_of(entry.get("trace_id")) or new_trace_id(),
                parent_id=id_of(entry.get("parent_id")) or None,
            )
            if self._queue.submit(job):
                count += 1
        if count:
            log.info("hooks: replaying %d unfinished after-hook jobs from the journal", count)
        return count

    def _breaker_of(self, job: Job) -> CircuitBreaker:
        return job.hook.breaker

    def _run_job(self, job: Job) -> Attempt:
        hook: LoadedHook = job.hook
        fields = job.event
        ev = HookEvent(
            fields["event"],
            fields["path"],
            uid=fields.get("uid", 0),
            gid=fields.get("gid", 0),
            pid=fields.get("pid", 0),
            offset=fields.get("offset", 0),
            size=fields.get("size", 0),
            file_size=fields.get("file_size", 0),
            old_path=fields.get("old_path"),
            new_path=fields.get("new_path"),
        )
        run = self._invoke(hook, ev, from_worker=True)
        self._span(hook, ev, job.trace_id, job.parent_id, run, attempt=job.attempt, phase="after")
        if run.status == "ok":
            return Attempt(True)
        return Attempt(False, run.kind, run.message)

    def _job_finished(self, job: Job, status: str) -> None:
        hook: LoadedHook = job.hook
        if status == "failed":
            strategy = hook.settings.strategy
            if strategy == "stop":
                hook.state = "stopped"
            elif strategy == "escalate":
                hook.state = "escalated"
                log.error(
                    "hooks: %s escalated after %d attempts: %s",
                    hook.key,
                    job.attempt,
                    job.last_error,
                )
            log.warning(
                "hooks: after-hook %s gave up on %s after %d attempts: %s",
                hook.key,
                job.event.get("path"),
                job.attempt,
                job.last_error,
            )
        self._mark_done(job.job_id)

    def _mark_done(self, job_id: str) -> None:
        if self.store is None:
            return
        try:
            self._in_fs(lambda: self._annotate(JOURNAL_DONE_KIND, job_id.encode()))
        except Exception:
            log.exception("hooks: could not mark after-hook job %s done", job_id)

    def _annotate(self, kind: str, payload: bytes) -> None:
        assert self.store is not None
        with self.store.transaction() as t:
            t.annotate(kind, payload)

    def _in_fs(self, fn: Callable[[], Any]) -> Any:
        if self.host is not None:
            return self.host.call(fn)
        return fn()

    @contextlib.contextmanager
    def suppress(self) -> Iterator[None]:
        """No hooks fire inside this block (a hook's own VFS effects)."""
        me = self._enter_suppressed()
        try:
            yield
        finally:
            self._leave_suppressed(me)

    # ------------------------------------------------------------------ reporting

    def listing(self) -> list[dict[str, Any]]:
        """Every file and hook with state, counters and latency percentiles."""
        self.reload()
        rows: list[dict[str, Any]] = []
        for hf in sorted(self._files.values(), key=lambda f: f.name):
            for hook in hf.hooks:
                state = hook.state
                if state == "active" and hook.breaker.state != "closed":
                    state = f"circuit-{hook.breaker.state}"
                p50, p99 = hook.stats.percentile(0.5), hook.stats.percentile(0.99)
                rows.append(
                    {
                        "file": hf.name,
                        "hook": hook.name,
                        "when": hook.when,
                        "event": hook.event,
                        "glob": hook.glob.text,
                        "version": hook.version,
                        "state": state,
                        "runs": hook.stats.runs,
                        "denies": hook.stats.denies,
                        "traps": hook.stats.traps,
                        "errors": hook.stats.errors,
                        "p50_us": None if p50 is None else round(p50, 1),
                        "p99_us": None if p99 is None else round(p99, 1),
                        "last_failure": hook.stats.last_failure,
                        "error": hf.error,
                    }
                )
            if hf.error is not None:
                rows.append(
                    {
                        "file": hf.name,
                        "hook": None,
                        "state": "refused",
                        "version": hf.refused_version,
                        "error": hf.error,
                        "active_version": hf.version,
                    }
                )
        return rows


def open_engine(
    store: Any, store_dir: str | os.PathLike[str], hooks_dir: str | os.PathLike[str] | None
) -> HookEngine:
    """The engine of a mount: hooks from ``hooks_dir`` (default ``<store>/hooks``),
    spans to ``<store>/traces/hooks.jsonl`` (and OTLP when configured)."""
    from vegafs.hooks.trace import trace_path

    directory = Path(hooks_dir) if hooks_dir else Path(store_dir) / "hooks"
    engine = HookEngine(directory, store=store, tracer=Tracer(trace_path(store_dir)))
    engine.reload()
    engine.forget_missing()
    return engine


def versions_at(store: Store, logseq: int | None = None) -> dict[str, str]:
    """Hook files and the versions that were active at ``logseq`` (default:
    the end of the log), from the store's ``hooks.version`` records."""
    active: dict[str, str] = {}
    for seq, payload in store.annotations(VERSION_KIND):
        if logseq is not None and seq > logseq:
            break
        try:
            record = json.loads(payload)
        except ValueError:
            continue
        if record.get("hash") is None:
            active.pop(record.get("file"), None)
        else:
            active[record["file"]] = record["hash"]
    return active


def _discard_text(text: str) -> None:
    """Hooks have no terminal: print() output is dropped (use trace::event)."""
