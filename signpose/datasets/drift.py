"""Drift between a new data set version and the version the current champion was trained on, from
their reports alone (no frames are read).

Per region (face, left hand, right hand, body):

* the change of the **missing share** (points with confidence 0), in absolute terms;
* the **Wasserstein-1 distance** between the normalised x (and y) coordinates of the present points,
  computed on the reports' 50-bin marginals; the larger of the two axes counts. Wasserstein-1 is in
  the coordinates' own unit (a share of the image side): 0.05 means the points moved by 5 % of the
  image on average, whatever the shape of the distributions. It needs no smoothing of empty bins and
  grows with how *far* the points moved, where the population stability index only sees that mass
  changed bins (a hand 2 % or 40 % of the image away from where it was scores alike once the
  histograms stop overlapping) and is undefined for the empty bins a region's coordinates always have.

Two scopes are compared with the champion's version: the **whole new version**, and the **new
sources** alone (those added or changed since the champion's version, pooled), because a weekly
delivery of 1 % of the corpus with the left hand missing in 40 % of its frames barely moves the
whole version's share, but is exactly what the team wants to hear about before training on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from signpose.datasets.report import REGIONS

TAG_DRIFT = "data.drift"                 # "true" | "false" | "unknown" (could not be computed)
TAG_DRIFT_REASON = "data.drift.reason"
TAG_DRIFT_REGION = "data.drift.{region}"  # what exceeded a threshold in that region
TAG_CHAMPION_DATA = "data.drift.champion_dataset_hash"
SCOPE_VERSION = "version"
SCOPE_NEW = "new sources"


def wasserstein1(hist_a: Iterable[float], hist_b: Iterable[float]) -> float | None:
    """Wasserstein-1 distance between two histograms over equal bins of [0, 1]: the area between their
    cumulative distributions. None when either histogram is empty (nothing to compare)."""
    a, b = np.asarray(hist_a, np.float64), np.asarray(hist_b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"histograms of different bins: {a.shape} and {b.shape}")
    if a.sum() <= 0 or b.sum() <= 0:
        return None
    return float(np.abs(np.cumsum(a / a.sum()) - np.cumsum(b / b.sum())).sum() / len(a))


def pool_regions(rows: Iterable[Mapping]) -> dict[str, dict]:
    """Region statistics of several sources as one: shares weighted by points, histograms summed."""
    pooled: dict[str, dict] = {}
    for row in rows:
        for region, stats in row.get("regions", {}).items():
            into = pooled.setdefault(region, {"points": 0, "missing": 0.0, "x_hist": None, "y_hist": None})
            points = int(stats.get("points", 0))
            into["points"] += points
            into["missing"] += float(stats.get("missing_share", 0.0)) * points
            for axis in ("x_hist", "y_hist"):
                hist = np.asarray(stats.get(axis, []), np.float64)
                into[axis] = hist if into[axis] is None else into[axis] + hist
    return {region: {"points": p["points"], "missing_share": p["missing"] / p["points"] if p["points"] else 0.0,
                     "x_hist": p["x_hist"], "y_hist": p["y_hist"]} for region, p in pooled.items()}


@dataclass(frozen=True)
class RegionDrift:
    region: str
    scope: str                       # SCOPE_VERSION or SCOPE_NEW
    missing_share: float             # in the compared data
    champion_missing_share: float    # in the champion's version
    distance: float | None           # Wasserstein-1 of the coordinates (max over x, y); None: not comparable
    exceeded: tuple[str, ...] = ()   # which thresholds it exceeds, in words

    @property
    def missing_change(self) -> float:
        return self.missing_share - self.champion_missing_share

    def describe(self) -> str:
        distance = "n/a" if self.distance is None else f"{self.distance:.3f}"
        return (f"{self.scope}: missing {self.champion_missing_share:.1%} -> {self.missing_share:.1%}, "
                f"coordinates W1 {distance}")


@dataclass(frozen=True)
class DriftReport:
    """The outcome of comparing a version with the champion's (or why it could not be compared)."""

    champion_dataset_hash: str
    computed: bool = True
    reason: str = ""                                           # why not computed
    regions: dict[str, RegionDrift] = field(default_factory=dict)   # the worst scope per region
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    @property
    def drifted(self) -> bool:
        return any(region.exceeded for region in self.regions.values())

    @property
    def flagged(self) -> dict[str, RegionDrift]:
        return {name: region for name, region in self.regions.items() if region.exceeded}

    def summary(self) -> str:
        """One line: what drifted (or that nothing did, or why it could not be computed)."""
        against = f"the champion's data set {self.champion_dataset_hash[:12] or '(unknown)'}"
        if not self.computed:
            return f"data drift against {against} could not be computed: {self.reason}"
        sources = f"sources +{len(self.added)} ~{len(self.changed)} -{len(self.removed)}"
        if not self.drifted:
            return f"no data drift against {against} ({sources})"
        parts = "; ".join(f"{name} {', '.join(region.exceeded)} ({region.scope})"
                          for name, region in self.flagged.items())
        return f"data drift against {against}: {parts} ({sources})"

    def tags(self) -> dict[str, str]:
        tags = {TAG_DRIFT: "unknown" if not self.computed else str(self.drifted).lower(),
                TAG_CHAMPION_DATA: self.champion_dataset_hash}
        if not self.computed:
            tags[TAG_DRIFT_REASON] = self.reason[:5000]
        for name, region in self.flagged.items():
            tags[TAG_DRIFT_REGION.format(region=name)] = f"{', '.join(region.exceeded)}; {region.describe()}"
        return tags


def not_computed(champion_dataset_hash: str, reason: str) -> DriftReport:
    return DriftReport(champion_dataset_hash, computed=False, reason=reason)


def _region_drift(region: str, scope: str, new: Mapping, old: Mapping, missing_share_change: float,
                  coordinate_distance: float) -> RegionDrift:
    distances = [wasserstein1(new[axis], old[axis]) for axis in ("x_hist", "y_hist")
                 if new.get(axis) is not None and old.get(axis) is not None]
    distances = [d for d in distances if d is not None]
    distance = max(distances) if distances else None
    missing, champion_missing = float(new["missing_share"]), float(old["missing_share"])
    exceeded = []
    if abs(missing - champion_missing) > missing_share_change:
        exceeded.append(f"missing share {champion_missing:.1%} -> {missing:.1%}")
    if distance is not None and distance > coordinate_distance:
        exceeded.append(f"coordinates moved (Wasserstein-1 {distance:.3f} > {coordinate_distance:g})")
    return RegionDrift(region, scope, missing, champion_missing, distance, tuple(exceeded))


def _source_changes(new: Mapping, old: Mapping) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    new_sources = {row["key"]: row.get("content_hash") for row in new.get("sources", [])}
    old_sources = {row["key"]: row.get("content_hash") for row in old.get("sources", [])}
    added = tuple(sorted(set(new_sources) - set(old_sources)))
    removed = tuple(sorted(set(old_sources) - set(new_sources)))
    changed = tuple(sorted(key for key in set(new_sources) & set(old_sources) if new_sources[key] != old_sources[key]))
    return added, changed, removed


def compare_reports(new: Mapping, champion: Mapping, *, missing_share_change: float,
                    coordinate_distance: float) -> DriftReport:
    """Compare the new version's report with the champion's version's report (see the module
    docstring); a region is flagged when either scope exceeds a threshold."""
    added, changed, removed = _source_changes(new, champion)
    scopes = {SCOPE_VERSION: pool_regions([new]) if "regions" in new else {}}
    fresh = set(added) | set(changed)
    if fresh:
        scopes[SCOPE_NEW] = pool_regions(row for row in new.get("sources", []) if row["key"] in fresh)
    old = pool_regions([champion])
    regions: dict[str, RegionDrift] = {}
    for name in [r for r in REGIONS if r in old] + sorted(set(old) - set(REGIONS)):
        candidates = [_region_drift(name, scope, pooled[name], old[name], missing_share_change, coordinate_distance)
                      for scope, pooled in scopes.items() if pooled.get(name, {}).get("points")]
        if candidates:  # the flagged scope first, then the larger missing-share change
            regions[name] = max(candidates, key=lambda r: (bool(r.exceeded), abs(r.missing_change)))
    return DriftReport(str(champion.get("dataset_hash", "")), regions=regions, added=added, changed=changed,
                       removed=removed)
