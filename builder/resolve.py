"""Solve a world (constraint strings) against package records into an install order.

Semantics follow apk-tools' solver for a fresh install into an empty root:

* A package occupies its own name (with its version) and every name it provides. A name
  holds one provider, except that any number of *unversioned* provides (``p:mail-reader``)
  may share a name. Two versions of one package, two versioned providers of one
  ``so:``/``cmd:`` name, or a package providing its own name are therefore conflicts.
* A requirement ``name[op version]`` is met by a provider of that name whose (provided)
  version matches; an unversioned provide only meets the any-version form.
  ``!name[op version]`` forbids matching providers other than the package carrying it.
* A virtual name whose candidates are unversioned provides is only auto-selected through a
  provider with ``provider_priority`` (``k:``) or whose own name is itself requested, or
  (unless ``strict_virtuals``) when it is the only provider; otherwise the user must pick
  one (apk-tools' "please select one of the 'provided by' packages explicitly").
* Candidate preference (apk-tools' ``compare_providers`` for fresh installs): preferred
  repository tag first (untagged repositories, or the ``@tag`` a world entry asked for),
  then higher version of the requested name (provided version for virtuals), then higher
  version of the package itself, then higher ``provider_priority``, then the repository
  that comes first, then input order.
* ``@tag`` pins: packages from a tagged repository are only eligible when a world entry asks
  for that tag, or when they are required (directly or transitively) by such a package or
  triggered by it through install_if.
* ``install_if`` packages are added when every condition is met by the selection (``!x``
  conditions: x not selected); they are optional — if one cannot be installed it is left out.
* Packages whose arch is neither ``arch``, ``noarch`` nor empty, or whose dependencies do
  not parse (e.g. an ``@tag`` inside an index ``D:``), are uninstallable.

The search: pending requirements are grouped by name; the next name decided is the one
with a single viable candidate, then names with a real package of that name before
virtual-only names, then first-requested (apk-tools decides forced names first and virtuals
last). Each choice is checked forward (occupied names, conflicts both ways, dependencies on
already-decided names); when a name has no viable candidate the search backtracks
chronologically to the last choice with alternatives. The first dead end found is the one
reported if nothing works: ``world requires foo, foo-1.0-r0 requires so:libbar.so.1: no
provider``.

Install order (deps before dependants) reproduces apk-tools' changeset walk: world entries
sorted by name, each package after its dependencies (``!conflict`` names included, which
puts a conflicting package's partner first), an install_if package right after the last of
its triggers. Divergences from apko (apko-notes §1.5): apko walks the world in the given
order (``sort_world=False`` does that here), prefers the requester's repository/origin
and the highest version over repository order, rewrites ``so:`` versions without ``-rN``,
and unifies versions across architectures; none of that is done here. Not supported:
upgrades/removals of an existing installation, ``--force-broken-world``, virtual ``-t``.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from builder.apk.model import Package
from builder.apk.version import Constraint, compare_versions, parse_constraint
from builder.errors import ApkImageError, ResolveError

MAX_STEPS = 50_000  # decisions + backtracks before giving up
_MAX_REASONS = 3


@dataclass(eq=False)
class _Info:
    """A package with its relations parsed once."""

    pkg: Package
    index: int
    repo_rank: int
    depends: list[Constraint]
    provides: list[tuple[str, str | None]]
    install_if: list[Constraint]
    occupies: list[tuple[str, str | None]]
    broken: str

    def __str__(self) -> str:
        return str(self.pkg)


@dataclass(frozen=True, eq=False)
class _Req:
    dep: Constraint
    chain: tuple[str, ...]
    allowed: frozenset[str]  # repository tags this requirement may take packages from
    preferred: frozenset[str]


class _State:
    """One node of the search; copied (shallowly, values immutable) at each decision."""

    __slots__ = ("providers", "conflicts", "pending", "order", "allowed", "chains", "skipped")

    def __init__(self) -> None:
        self.providers: dict[str, tuple[tuple[_Info, str | None], ...]] = {}
        self.conflicts: dict[str, tuple[tuple[Constraint, _Info | None], ...]] = {}
        self.pending: dict[str, tuple[_Req, ...]] = {}
        self.order: list[_Info] = []
        self.allowed: dict[int, frozenset[str]] = {}
        self.chains: dict[int, tuple[str, ...]] = {}
        self.skipped: frozenset[str] = frozenset()

    def copy(self) -> _State:
        new = _State.__new__(_State)
        new.providers = dict(self.providers)
        new.conflicts = dict(self.conflicts)
        new.pending = dict(self.pending)
        new.order = list(self.order)
        new.allowed = dict(self.allowed)
        new.chains = dict(self.chains)
        new.skipped = self.skipped
        return new


Candidate = tuple[_Info, str | None]


@dataclass
class _Decision:
    name: str
    chain: tuple[str, ...]
    candidates: list[Candidate | None]  # None = leave an install_if package out
    failure: str = ""
    install_if: bool = False


def _provision_allows(dep: Constraint, version: str | None, info: _Info) -> bool:
    return dep.allows(version, info.pkg.checksum)


def _conflict_hits(dep: Constraint, version: str | None, info: _Info) -> bool:
    """Whether conflict `dep` forbids a provider offering `version`."""
    return dep.matches(version, info.pkg.checksum)


class _Solver:
    def __init__(self, packages: list[Package], arch: str | None, strict_virtuals: bool) -> None:
        self.strict_virtuals = strict_virtuals
        self.infos: list[_Info] = []
        self.by_name: dict[str, list[Candidate]] = defaultdict(list)
        self.iif_by_name: dict[str, list[_Info]] = defaultdict(list)
        self.rinstall_if: dict[str, list[str]] = defaultdict(list)
        repo_ranks: dict[str, int] = {}
        for index, pkg in enumerate(packages):
            rank = repo_ranks.setdefault(pkg.repository, len(repo_ranks))
            info = self._parse(pkg, index, rank, arch)
            self.infos.append(info)
            for name, version in info.occupies:
                self.by_name[name].append((info, version))
            if info.install_if:
                self.iif_by_name[pkg.name].append(info)
                for d in info.install_if:
                    if pkg.name not in self.rinstall_if[d.name]:
                        self.rinstall_if[d.name].append(pkg.name)
        self.iif_names = sorted(self.iif_by_name)
        self.first_failure = ""

    @staticmethod
    def _parse(pkg: Package, index: int, rank: int, arch: str | None) -> _Info:
        broken = ""
        depends: list[Constraint] = []
        provides: list[tuple[str, str | None]] = []
        install_if: list[Constraint] = []
        try:
            depends = [parse_constraint(d) for d in pkg.depends]
            install_if = [parse_constraint(d) for d in pkg.install_if]
            for p in pkg.provides:
                c = parse_constraint(p)
                if c.conflict or c.tag or c.op not in ("", "="):
                    raise ApkImageError(f"bad provides {p!r}")
                provides.append((c.name, c.version if c.op == "=" else None))
            if any(d.tag for d in depends):
                broken = "has a dependency with a repository tag"
        except ApkImageError as exc:
            broken = f"has an invalid dependency field ({exc})"
        if not broken and arch and pkg.arch not in ("", "noarch", arch):
            broken = f"is built for arch {pkg.arch}, not {arch}"
        occupies: list[tuple[str, str | None]] = [(pkg.name, pkg.version)]
        seen: dict[str, str | None] = {pkg.name: pkg.version}
        for name, version in provides:
            if name in seen and not (version is None and seen[name] is None):
                broken = broken or f"provides {name} twice (or its own name)"
            seen[name] = version
            occupies.append((name, version))
        return _Info(pkg, index, rank, depends, provides, install_if, occupies, broken)

    # -- search ---------------------------------------------------------------------------

    def solve(self, world: list[Constraint]) -> _State:
        state = _State()
        for dep in world:
            if dep.conflict:
                state.conflicts[dep.name] = state.conflicts.get(dep.name, ()) + ((dep, None),)
                continue
            tags = frozenset({"", dep.tag})
            req = _Req(dep, (f"world requires {dep}",), tags, frozenset({dep.tag}))
            state.pending[dep.name] = state.pending.get(dep.name, ()) + (req,)
        stack: list[tuple[_State, _Decision, int]] = []
        steps = 0
        while True:
            steps += 1
            if steps > MAX_STEPS:
                raise ResolveError(
                    f"gave up after {MAX_STEPS} search steps; first conflict: {self.first_failure}"
                )
            decision = self._next_decision(state)
            if decision is None:
                return state
            if not decision.candidates:
                if not self.first_failure:
                    self.first_failure = f"{', '.join(decision.chain)}: {decision.failure}"
                while stack:
                    base, dec, i = stack.pop()
                    if i + 1 < len(dec.candidates):
                        stack.append((base, dec, i + 1))
                        state = self._apply(base, dec, dec.candidates[i + 1])
                        break
                else:
                    raise ResolveError(self.first_failure)
                continue
            stack.append((state, decision, 0))
            state = self._apply(state, decision, decision.candidates[0])

    def _next_decision(self, state: _State) -> _Decision | None:
        """The next name to decide, or a dead end (a decision without candidates).

        Order: names with one viable candidate, then triggered install_if packages, then
        names with several candidates, then virtual-only names. A virtual whose providers
        all lack a priority may still be met by a later regular choice, so it fails last,
        but before install_if packages are tried: as in apk-tools, a package pulled in only
        by install_if does not satisfy such a request (apk-tools test provides14).
        """
        best: tuple[tuple[int, int], _Decision] | None = None
        for seq, (name, reqs) in enumerate(state.pending.items()):
            viable, reasons = self._candidates(state, name, reqs)
            chain = reqs[0].chain
            if not viable:
                failure = _Decision(name, chain, [], self._explain(name, reasons))
                if not reasons or any(why != "virtual" for _, why in reasons):
                    return failure
                key, decision = (4, seq), failure
            else:
                virtual_only = all(info.pkg.name != name for info, _ in self.by_name[name])
                tier = 3 if virtual_only else 0 if len(viable) == 1 else 2
                key, decision = (tier, seq), _Decision(name, chain, list(viable))
            if best is None or key < best[0]:
                best = (key, decision)
                if key[0] == 0:
                    break
        if best is None or best[0][0] in (2, 3):
            iif = self._next_install_if(state)
            if iif is not None:
                return iif
        return best[1] if best is not None else None

    def _next_install_if(self, state: _State) -> _Decision | None:
        for name in self.iif_names:
            if name in state.providers or name in state.skipped or name in state.pending:
                continue
            triggered = [i for i in self.iif_by_name[name] if self._triggered(state, i)]
            if not triggered:
                continue
            viable: list[Candidate | None] = []
            for info in sorted(triggered, key=functools.cmp_to_key(self._cmp_iif)):
                allowed = frozenset({""}).union(
                    *(state.allowed.get(q.index, frozenset()) for q in self._triggers(state, info))
                )
                if not self._reject(state, info, info.pkg.version, name, (), allowed):
                    viable.append((info, info.pkg.version))
            viable.append(None)
            conds = " ".join(info.pkg.install_if)
            chain = (f"{triggered[0]} is installed by install_if ({conds})",)
            return _Decision(name, chain, viable, install_if=True)
        return None

    def _triggered(self, state: _State, info: _Info) -> bool:
        for d in info.install_if:
            provs = state.providers.get(d.name, ())
            if d.conflict:
                if any(q is not info and _conflict_hits(d, v, q) for q, v in provs):
                    return False
            elif not any(_provision_allows(d, v, q) for q, v in provs):
                return False
        return True

    def _triggers(self, state: _State, info: _Info) -> list[_Info]:
        return [
            q for d in info.install_if if not d.conflict
            for q, _ in state.providers.get(d.name, ())[:1]
        ]

    def _candidates(
        self, state: _State, name: str, reqs: tuple[_Req, ...]
    ) -> tuple[list[Candidate], list[tuple[str, str]]]:
        allowed = frozenset().union(*(r.allowed for r in reqs))
        preferred = frozenset().union(*(r.preferred for r in reqs))
        viable: list[Candidate] = []
        reasons: list[tuple[str, str]] = []
        for info, version in self.by_name.get(name, ()):
            why = self._reject(state, info, version, name, reqs, allowed)
            if why:
                reasons.append((str(info), why))
            else:
                viable.append((info, version))
        if len(viable) > 1:
            def cmp(a: Candidate, b: Candidate) -> int:
                return self._cmp_candidates(a, b, preferred)

            viable.sort(key=functools.cmp_to_key(cmp))
        return viable, reasons

    def _reject(
        self,
        state: _State,
        info: _Info,
        version: str | None,
        name: str,
        reqs: tuple[_Req, ...],
        allowed: frozenset[str],
    ) -> str:
        """Why `info` (providing `name` at `version`) cannot be chosen now; "" if it can."""
        pkg = info.pkg
        if info.broken:
            return f"uninstallable: {info.broken}"
        for r in reqs:
            if not _provision_allows(r.dep, version, info):
                return f"does not satisfy {r.dep}"
        if pkg.repository_tag and pkg.repository_tag not in allowed:
            return f"is only in repository @{pkg.repository_tag} (ask for {pkg.name}@" \
                f"{pkg.repository_tag})"
        if (version is None and pkg.name != name and not pkg.provider_priority
                and pkg.name not in state.pending
                and (self.strict_virtuals or len(self.by_name[name]) > 1)):
            return "virtual"
        for m, v in info.occupies:
            existing = state.providers.get(m)
            if existing and not (v is None and all(ev is None for _, ev in existing)):
                return f"{m} is already provided by {existing[0][0]}"
            if m != name:
                for r in state.pending.get(m, ()):
                    if not _provision_allows(r.dep, v, info):
                        return f"provides {m}{'=' + v if v else ''}, which breaks {r.dep}"
            for c, owner in state.conflicts.get(m, ()):
                if owner is not info and _conflict_hits(c, v, info):
                    return f"is excluded by {owner or 'world'}[{c}]"
        own = dict(info.occupies)
        for d in info.depends:
            provs = state.providers.get(d.name, ())
            if d.conflict:
                for q, qv in provs:
                    if q is not info and _conflict_hits(d, qv, q):
                        return f"conflicts with {q} ([{d}])"
            elif d.name in own and _provision_allows(d, own[d.name], info):
                continue
            elif provs and not any(_provision_allows(d, qv, q) for q, qv in provs):
                return f"requires {d}, but {d.name} is already provided by {provs[0][0]}"
        return ""

    @staticmethod
    def _cmp_candidates(a: Candidate, b: Candidate, preferred: frozenset[str]) -> int:
        """Negative when `a` is the better choice (apk-tools' compare_providers, fresh install)."""
        (ia, va), (ib, vb) = a, b
        pa, pb = ia.pkg.repository_tag in preferred, ib.pkg.repository_tag in preferred
        if pa != pb:
            return -1 if pa else 1
        if va is not None and vb is not None:
            r = compare_versions(va, vb)
            if r:
                return -r
        if ia.pkg.name == ib.pkg.name:
            r = compare_versions(ia.pkg.version, ib.pkg.version)
            if r:
                return -r
        r = (ib.pkg.provider_priority or 0) - (ia.pkg.provider_priority or 0)
        if r:
            return r
        return (ia.repo_rank - ib.repo_rank) or (ia.index - ib.index)

    def _cmp_iif(self, a: _Info, b: _Info) -> int:
        return self._cmp_candidates((a, a.pkg.version), (b, b.pkg.version), frozenset({""}))

    def _explain(self, name: str, reasons: list[tuple[str, str]]) -> str:
        if not self.by_name.get(name):
            return "no provider"
        virtual = [p for p, why in reasons if why == "virtual"]
        if virtual and len(virtual) == len(reasons):
            return (f"{name} is a virtual package provided by {', '.join(virtual)}; "
                    "none has a provider priority, request one of them explicitly")
        shown = [f"{p} {why}" for p, why in reasons if why and why != "virtual"]
        more = len(shown) - _MAX_REASONS
        text = "; ".join(shown[:_MAX_REASONS]) + (f"; and {more} more" if more > 0 else "")
        return f"no candidate fits ({text})"

    def _apply(self, base: _State, decision: _Decision, cand: Candidate | None) -> _State:
        state = base.copy()
        if cand is None:
            state.skipped = state.skipped | {decision.name}
            return state
        info, _ = cand
        allowed: frozenset[str] = frozenset({""})
        for m, _v in info.occupies:
            for r in state.pending.pop(m, ()):
                allowed |= r.allowed
        if decision.install_if:
            for q in self._triggers(base, info):
                allowed |= base.allowed.get(q.index, frozenset())
        for m, v in info.occupies:
            state.providers[m] = state.providers.get(m, ()) + ((info, v),)
        state.order.append(info)
        state.allowed[info.index] = allowed
        state.chains[info.index] = decision.chain
        for d in info.depends:
            if d.conflict:
                state.conflicts[d.name] = state.conflicts.get(d.name, ()) + ((d, info),)
                continue
            provs = state.providers.get(d.name, ())
            if any(_provision_allows(d, v, q) for q, v in provs):
                continue
            req = _Req(d, decision.chain + (f"{info} requires {d}",), allowed, frozenset({""}))
            state.pending[d.name] = state.pending.get(d.name, ()) + (req,)
        return state

    # -- install order --------------------------------------------------------------------

    def install_order(self, world: list[Constraint], state: _State) -> list[Package]:
        """apk-tools' changeset walk for a fresh install (see the module docstring)."""
        chosen = {name: provs[0][0] for name, provs in state.providers.items()}
        processed: set[str] = set()
        in_cs: set[int] = set()
        out: list[_Info] = []
        # A frame walks a package's dependencies, or the install_if packages its placement
        # may have made ready.
        stack: list[tuple[Literal["deps"], _Info, Iterator[Constraint]]
                    | tuple[Literal["iif"], None, Iterator[str]]] = []

        def start(name: str) -> None:
            if name in processed:
                return
            processed.add(name)
            info = chosen.get(name)
            if info is None or info.index in in_cs:
                return
            in_cs.add(info.index)
            processed.add(info.pkg.name)
            processed.update(n for n, _ in info.provides)
            stack.append(("deps", info, iter(info.depends)))

        def iif_ready(name: str) -> bool:
            info = chosen.get(name)
            if info is None or name in processed:
                return False
            for d in info.install_if:
                if not d.conflict and d.name not in processed:
                    return False
                c = chosen.get(d.name)
                if d.conflict:
                    if c is not None and _conflict_hits(d, dict(c.occupies)[d.name], c):
                        return False
                elif c is None or not _provision_allows(d, dict(c.occupies)[d.name], c):
                    return False
            return True

        for dep in world:
            start(dep.name)
            while stack:
                frame = stack[-1]
                if frame[0] == "deps":
                    _, item, deps = frame
                    nxt_dep = next(deps, None)
                    if nxt_dep is not None:
                        start(nxt_dep.name)
                        continue
                    stack.pop()
                    out.append(item)
                    names = [n for m in [item.pkg.name, *(n for n, _ in item.provides)]
                             for n in self.rinstall_if.get(m, ())]
                    stack.append(("iif", None, iter(names)))
                else:
                    nxt = next(frame[2], None)
                    if nxt is None:
                        stack.pop()
                    elif iif_ready(nxt):
                        start(nxt)
        placed = {i.index for i in out}
        out.extend(i for i in state.order if i.index not in placed)
        return [i.pkg for i in out]


def resolve(
    world: list[str],
    packages: list[Package],
    arch: str | None = None,
    *,
    sort_world: bool = True,
    strict_virtuals: bool = False,
) -> list[Package]:
    """Resolve `world` against `packages`; the install list, dependencies first.

    `arch` (an APK arch) makes packages built for other archs uninstallable. `sort_world`
    walks world entries in name order as apk-tools does (False: the given order, as apko).
    A virtual name with a single unversioned provider and no provider priority (``/bin/sh``
    from busybox in Alpine <= 3.18) is auto-selected, as apk-tools 2.x (Alpine's own apk for
    those releases) and apko do; `strict_virtuals` applies apk-tools 3's rule instead (never
    auto-select an unversioned provider without priority; the solver test-suite's behaviour).
    Raises ResolveError naming the chain of requirements when the world cannot be met.
    """
    constraints: list[Constraint] = []
    for text in world:
        try:
            constraints.append(parse_constraint(text))
        except ApkImageError as exc:
            raise ResolveError(f"world: {exc}") from None
    solver = _Solver(packages, arch, strict_virtuals)
    state = solver.solve(constraints)
    walk = sorted(constraints, key=lambda c: c.name) if sort_world else constraints
    return solver.install_order(walk, state)
