"""Hierarchical quota: nominal, borrowing and lending limits over a queue tree.

Model (the same idea as Kueue's cohorts, stated so it can be checked):
- subtree(X) = nominal(X) + sum of lendable(child) over X's children;
- lendable(X) = min(lendingLimit(X), subtree(X)), or all of subtree(X) without a limit;
- guaranteed(X) = subtree(X) - lendable(X): kept for X's own subtree, never lent;
- W(X), the usage X's pool must serve: X's own usage (only leaves take gangs, but a leaf
  that gains children keeps what it admitted) plus, over children,
  max(0, W(child) - guaranteed(child));
- a queue borrows max(0, W(X) - subtree(X)) from its parent, at most borrowingLimit(X);
  a root cannot borrow, so W(root) <= subtree(root).
Only resources some queue of a tree declares are quota-managed in that tree; the rest
are limited by nodes alone. W is kept incrementally: a charge walks one path.

Deleting a queue (`remove`), defined once here:
- gangs already running under it keep running and stay charged, to it and along its
  path, until they end: the queue stays in the tree as a tombstone while it or its
  subtree holds usage or it still has children, and is dropped when the last of that
  goes (a deleted parent with it, once it is empty in turn);
- nothing new is admitted under a deleted queue or anywhere below it: its own gangs and
  those of its descendants get a blocker naming the deleted queue;
- publishing the queue again (`upsert`) revives it, usage and children included;
- a dropped queue is remembered: undoing the release that dropped it (a rolled-back
  eviction, a what-if probe) charges it again and so puts it back, still deleted.
So the tree is a function of the queue objects (a deleted one with its last spec), the
deleted marks and the leaf usage. A controller keeps a deleted Queue object (finalizer)
until it is dropped here, and rebuilding after a restart applies the deletions after
restoring the admissions: the rebuilt tree then equals the live one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controller.engine.errors import InvalidInput
from controller.engine.model import Queue, Resources


@dataclass(frozen=True, slots=True)
class QuotaShortfall:
    """Why a charge does not fit, at the first queue on the path that refuses it."""

    queue: str
    resource: str
    would_use: int
    allowed: int
    message: str


class QuotaTree:
    """The queue tree with derived limits and incrementally maintained usage."""

    def __init__(self) -> None:
        self._queues: dict[str, Queue] = {}
        self._children: dict[str, list[str]] = {}
        self._deleted: set[str] = set()
        self._dropped: dict[str, Queue] = {}  # deleted and dropped, for undone releases
        self._refused: dict[str, str] = {}  # why a queue's last spec was refused (a cycle)
        self._usage: dict[str, dict[str, int]] = {}  # leaf -> own usage
        self._pool_usage: dict[str, dict[str, int]] = {}  # W(X)
        self._subtree: dict[str, dict[str, int]] = {}
        self._guaranteed: dict[str, dict[str, int]] = {}
        self._managed: dict[str, frozenset[str]] = {}  # root -> managed resources
        self._paths: dict[str, list[str]] = {}
        self._managed_of: dict[str, frozenset[str]] = {}  # queue -> its root's, as read
        self._headroom: dict[tuple[str, str], tuple[int | None, str]] = {}
        self.generation = 0

    # ---- structure -------------------------------------------------------------------
    def upsert(self, queue: Queue) -> None:
        """Add or replace a queue; refuses (and changes nothing but remembering why, for
        the blockers of the gangs below it) if it would close a cycle.

        Limits and pool usage are rebuilt from leaf usage, so a moved queue takes its
        usage along to its new parent.
        """
        try:
            self._check_no_cycle(queue)
        except InvalidInput as exc:
            self._refused[queue.name] = exc.what
            self.generation += 1  # blockers below it now say why
            raise
        self._refused.pop(queue.name, None)
        old = self._queues.get(queue.name)
        if old is not None and old.parent in self._children:
            self._children[old.parent].remove(queue.name)
        self._queues[queue.name] = queue
        self._deleted.discard(queue.name)
        self._dropped.pop(queue.name, None)
        self._children.setdefault(queue.name, [])
        if queue.parent is not None:
            siblings = self._children.setdefault(queue.parent, [])
            siblings.append(queue.name)
            siblings.sort()
        self._recompute_limits()
        if old is not None and old.parent is not None and old.parent != queue.parent:
            self._drop_if_spent(old.parent)

    def remove(self, name: str) -> None:
        """Delete a queue as the module docstring defines: a tombstone while it holds
        usage or children, gone after that."""
        if self._refused.pop(name, None) is not None:
            self.generation += 1
        if name not in self._queues or name in self._deleted:
            return
        self._deleted.add(name)
        self.generation += 1  # blockers of the queue and its subtree change
        self._drop_if_spent(name)

    def is_deleted(self, name: str) -> bool:
        """Whether the queue is a tombstone: deleted, kept for the usage it still holds."""
        return name in self._deleted

    def _drop_if_spent(self, name: str) -> None:
        """Drop a deleted queue once nothing runs in its subtree and it has no children;
        a deleted parent left empty by that goes too."""
        if name not in self._deleted or self._has_usage(name) or self._children.get(name):
            return
        queue = self._queues.pop(name)
        self._dropped[name] = queue
        self._children.pop(name, None)
        self._usage.pop(name, None)
        self._pool_usage.pop(name, None)
        self._deleted.discard(name)
        if queue.parent is not None and queue.parent in self._children:
            self._children[queue.parent].remove(name)
            self._drop_if_spent(queue.parent)
        self._recompute_limits()

    def _revive_dropped(self, name: str) -> None:
        """Put back, still deleted, a queue dropped when its last gang was released: that
        release is being undone (a rolled-back eviction, a what-if probe)."""
        queue = self._dropped.pop(name, None)
        if queue is None:
            return
        if queue.parent is not None and queue.parent not in self._queues:
            self._revive_dropped(queue.parent)
        self._queues[name] = queue
        self._deleted.add(name)
        self._children.setdefault(name, [])
        if queue.parent is not None:
            siblings = self._children.setdefault(queue.parent, [])
            siblings.append(name)
            siblings.sort()
        self._recompute_limits()

    def _check_no_cycle(self, queue: Queue) -> None:
        path = [queue.name]
        parent = queue.parent
        while parent is not None:
            if parent in path:
                cycle = " -> ".join([*path[path.index(parent) :], parent])
                raise InvalidInput(f"queue {queue.name}: parent", f"queue cycle: {cycle}")
            path.append(parent)
            nxt = self._queues.get(parent)
            parent = nxt.parent if nxt is not None else None

    def get(self, name: str) -> Queue | None:
        return self._queues.get(name)

    def names(self) -> list[str]:
        return sorted(self._queues)

    def children(self, name: str) -> list[str]:
        return list(self._children.get(name, ()))

    def is_leaf(self, name: str) -> bool:
        return not self._children.get(name)

    def path(self, name: str) -> list[str]:
        """The queue and its ancestors, leaf first; stops at a missing parent."""
        hit = self._paths.get(name)
        if hit is not None:
            return hit
        out = [name]
        q = self._queues.get(name)
        while q is not None and q.parent is not None and q.parent in self._queues:
            out.append(q.parent)
            q = self._queues[q.parent]
        self._paths[name] = out
        return out

    def root(self, name: str) -> str:
        return self.path(name)[-1]

    def admission_blocker(self, name: str) -> str | None:
        """Why a gang cannot use this queue at all, or None if it may."""
        q = self._queues.get(name)
        if q is None:
            if name in self._refused:
                return f"queue {name} is not usable: {self._refused[name]}"
            return f"queue {name} does not exist"
        if name in self._deleted:
            return f"queue {name} is deleted: it admits nothing new"
        if not self.is_leaf(name):
            return f"queue {name} is not a leaf queue; only leaf queues take gangs"
        path = self.path(name)
        for ancestor in path[1:]:
            if ancestor in self._deleted:
                return f"queue {name}: ancestor {ancestor} is deleted: it admits nothing new"
        top = self._queues[path[-1]]
        if top.parent in self._refused:
            return f"queue {name}: ancestor {top.parent} is not usable: {self._refused[top.parent]}"
        if top.parent is not None:
            return f"queue {name}: ancestor {top.parent} does not exist"
        return None

    # ---- derived limits --------------------------------------------------------------
    def _recompute_limits(self) -> None:
        self.generation += 1
        self._paths.clear()
        self._managed_of.clear()
        self._headroom.clear()
        self._subtree.clear()
        self._guaranteed.clear()
        self._managed.clear()
        roots = [
            n for n, q in self._queues.items() if q.parent is None or q.parent not in self._queues
        ]
        for r in sorted(roots):
            resources: set[str] = set()
            self._derive(r, resources)
            self._managed[r] = frozenset(resources)
        for name in self._queues:
            self._pool_usage[name] = {}
        for leaf in self._usage:
            managed = self._managed_part(leaf, self._usage[leaf])
            if managed:
                self._apply(leaf, managed, +1)

    def _derive(self, name: str, resources: set[str]) -> None:
        q = self._queues[name]
        resources.update(q.quota)
        subtree = {r: lim.nominal for r, lim in q.quota.items()}
        for child in self._children.get(name, ()):
            self._derive(child, resources)
            child_q = self._queues[child]
            for r, amount in self._subtree[child].items():
                lim = child_q.quota.get(r)
                lend = (
                    amount
                    if lim is None or lim.lending_limit is None
                    else min(lim.lending_limit, amount)
                )
                subtree[r] = subtree.get(r, 0) + lend
        self._subtree[name] = subtree
        self._guaranteed[name] = {
            r: amount
            - (
                amount
                if (lim := q.quota.get(r)) is None or lim.lending_limit is None
                else min(lim.lending_limit, amount)
            )
            for r, amount in subtree.items()
        }

    def managed(self, queue: str) -> frozenset[str]:
        """The resources quota-managed in the queue's tree (kept per queue: read for
        every quota check)."""
        hit = self._managed_of.get(queue)
        if hit is None:
            hit = self._managed_of[queue] = self._managed.get(self.root(queue), frozenset())
        return hit

    def subtree_quota(self, queue: str, resource: str) -> int:
        return self._subtree.get(queue, {}).get(resource, 0)

    # ---- usage -----------------------------------------------------------------------
    def usage(self, leaf: str) -> Mapping[str, int]:
        return self._usage.get(leaf, {})

    def pool_usage(self, queue: str) -> Mapping[str, int]:
        return self._pool_usage.get(queue, {})

    def subtree_usage(self, queue: str) -> dict[str, int]:
        """Total usage of all leaves under `queue` (what the Queue status reports)."""
        total: dict[str, int] = {}
        stack = [queue]
        while stack:
            n = stack.pop()
            for r, v in self._usage.get(n, {}).items():
                total[r] = total.get(r, 0) + v
            stack.extend(self._children.get(n, ()))
        return total

    def borrowed(self, queue: str, resource: str) -> int:
        return max(0, self.pool_usage(queue).get(resource, 0) - self.subtree_quota(queue, resource))

    def _has_usage(self, name: str) -> bool:
        return any(self.subtree_usage(name).values())

    def _managed_part(self, leaf: str, charge: Resources) -> dict[str, int]:
        managed = self.managed(leaf)
        return {r: v for r, v in charge.items() if v and r in managed}

    def headroom(self, leaf: str, resource: str) -> tuple[int | None, str]:
        """How much more of `resource` the leaf can take now, and the queue that binds.

        Walking up, a queue below its guaranteed share absorbs part of an increase before
        it reaches the parent; a queue with slack s lets through at most s more. So an
        increase d fits iff, at every queue X it reaches, d <= absorbed-below(X) + slack(X).
        None means unlimited (the resource is not quota-managed in this tree).
        """
        key = (leaf, resource)
        hit = self._headroom.get(key)
        if hit is not None:
            return hit
        if resource not in self.managed(leaf):
            result: tuple[int | None, str] = (None, leaf)
        else:
            best: int | None = None
            binding = leaf
            absorbed = 0
            for name in self.path(leaf):
                q = self._queues[name]
                used = self._pool_usage[name].get(resource, 0)
                sub = self._subtree[name].get(resource, 0)
                if q.parent is None:
                    limit: int | None = sub
                else:
                    lim = q.quota.get(resource)
                    blim = lim.borrowing_limit if lim is not None else None
                    limit = None if blim is None else sub + blim
                if limit is not None:
                    room = absorbed + max(0, limit - used)
                    if best is None or room < best:
                        best, binding = room, name
                absorbed += max(0, self._guaranteed[name].get(resource, 0) - used)
            result = (best, binding)
        self._headroom[key] = result
        return result

    def check(self, leaf: str, charge: Resources) -> QuotaShortfall | None:
        """Whether `charge` fits on top of current usage; the first refusal otherwise."""
        for r, v in charge.items():
            if not v:
                continue
            room, binding = self.headroom(leaf, r)
            if room is not None and v > room:
                where = f"queue {leaf}" if binding == leaf else f"queue {leaf} (via {binding})"
                return QuotaShortfall(
                    binding,
                    r,
                    v,
                    room,
                    f"{where}: needs {v} {r}, quota leaves room for {room}",
                )
        return None

    def check_placed(
        self, leaf: str, charge: Resources, minimum: Resources
    ) -> QuotaShortfall | None:
        """`check(leaf, charge)` for a placed gang whose `minimum` charge passed `check`
        with usage as it is now: None at once when the two are the same charge (no
        firstAvailable nor allocationMode All: what it got is what it needed)."""
        if charge == minimum:
            return None
        return self.check(leaf, charge)

    def charge(self, leaf: str, charge: Resources) -> None:
        if leaf in self._dropped:
            self._revive_dropped(leaf)
        usage = self._usage.setdefault(leaf, {})
        for r, v in charge.items():
            if v:
                usage[r] = usage.get(r, 0) + v
        managed = self._managed_part(leaf, charge)
        if managed:
            self._apply(leaf, managed, +1)

    def uncharge(self, leaf: str, charge: Resources) -> None:
        usage = self._usage.setdefault(leaf, {})
        for r, v in charge.items():
            if v:
                left = usage.get(r, 0) - v
                if left < 0:
                    raise InvalidInput(
                        f"queue {leaf}", f"releasing {v} {r} but only {left + v} used"
                    )
                if left:
                    usage[r] = left
                else:
                    usage.pop(r, None)
        managed = self._managed_part(leaf, charge)
        if managed:
            self._apply(leaf, managed, -1)
        self._drop_if_spent(leaf)

    def _apply(self, leaf: str, amounts: Mapping[str, int], sign: int) -> None:
        self._headroom.clear()
        delta = {r: sign * v for r, v in amounts.items()}
        for name in self.path(leaf):
            if not delta:
                return
            pool = self._pool_usage.setdefault(name, {})
            guaranteed = self._guaranteed.get(name, {})
            nxt: dict[str, int] = {}
            for r, d in delta.items():
                old = pool.get(r, 0)
                new = old + d
                pool[r] = new
                g = guaranteed.get(r, 0)
                up = max(0, new - g) - max(0, old - g)
                if up:
                    nxt[r] = up
            delta = nxt

    # ---- invariant -------------------------------------------------------------------
    def violations(self) -> list[str]:
        """Every place where usage exceeds what quotas allow (empty when invariant 4 holds)."""
        out: list[str] = []
        for name in sorted(self._queues):
            q = self._queues[name]
            if q.parent is not None and q.parent not in self._queues:
                continue
            for r, used in sorted(self._pool_usage.get(name, {}).items()):
                sub = self.subtree_quota(name, r)
                if q.parent is None:
                    if used > sub:
                        out.append(f"{name}: {r} pool usage {used} > {sub}")
                else:
                    lim = q.quota.get(r)
                    blim = lim.borrowing_limit if lim is not None else None
                    if blim is not None and used - sub > blim:
                        out.append(f"{name}: {r} borrows {used - sub} > limit {blim}")
        return out

    def recomputed_pool_usage(self) -> dict[str, dict[str, int]]:
        """W recomputed from scratch from leaf usage, to cross-check the incremental one."""
        out: dict[str, dict[str, int]] = {}

        def walk(name: str) -> dict[str, int]:
            own = self._managed_part(name, self._usage.get(name, {}))
            w = dict(own)
            for c in self._children.get(name, ()):
                cw = walk(c)
                g = self._guaranteed.get(c, {})
                for r, v in cw.items():
                    up = max(0, v - g.get(r, 0))
                    if up:
                        w[r] = w.get(r, 0) + up
            out[name] = {r: v for r, v in w.items() if v}
            return w

        for r in sorted(self._managed):
            walk(r)
        return out
