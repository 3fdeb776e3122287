"""Data set versions of a growing corpus: a prefix listed as sources, per-source shards shared between
versions, stable splits, a report per version, history / diff / garbage collection.

- :mod:`signpose.datasets.splits`: a video's split from its own id, inherited from the parent version;
- :mod:`signpose.datasets.listing`: a folder or object-store prefix as a list of sources (paginated);
- :mod:`signpose.datasets.sources`: reading one source (its bytes, content hash, frames, video ids);
- :mod:`signpose.datasets.version`: planning a version (what to render, what to reuse), rendering a
  source into its shards, committing the version;
- :mod:`signpose.datasets.report`: the per-version data report (per split, per region, per source);
- :mod:`signpose.datasets.history`: ``history``, ``diff`` and ``gc`` over a store's versions;
- :mod:`signpose.datasets.drift`: a version's report against the champion's (missing share, Wasserstein-1);
- :mod:`signpose.datasets.figure`: the report as a picture for MLflow.

The storage model is in docs/storage.md ("Data set versions"). Nothing here imports torch.
"""
