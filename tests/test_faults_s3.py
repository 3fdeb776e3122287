"""S3 faults: the preprocess stage against moto's S3 server through a fault-injecting proxy.

Transient faults (connection resets, answers lost after the write was applied, 500 InternalError,
503 SlowDown) are absorbed by botocore's retries and the data set ends byte-identical to one written
without faults. A permanent failure ends the stage with an error naming the object and leaves no
manifest, so no reader and no later stage can take the half-written data set for a complete one.
"""

from __future__ import annotations

import functools

import pytest
from faultproxy import FaultPlan, FaultProxy, store_snapshot

from signpose import shards, stages
from signpose.shards import ManifestNotFoundError, read_manifest, verify_dataset
from signpose.store import StoreError, open_store

# 4 videos x 8 frames, shards of 8: 4 shards, about 25 requests for a whole preprocess run.
SMALL = dict(image_size=32, shard_size=8, synthetic_videos=4, synthetic_frames_per_video=8, workers=1)


def preprocess(store_uri: str):
    return stages.preprocess("", store_uri, **SMALL)


@pytest.fixture(scope="module")
def clean_snapshot(tmp_path_factory):
    """The data set written once without any fault (the reference for byte comparisons)."""
    root = tmp_path_factory.mktemp("clean") / "dataset"
    preprocess(str(root))
    return store_snapshot(str(root))


@pytest.fixture
def proxy(s3_endpoint, monkeypatch):
    """A fault proxy in front of moto; every boto3 client of this process goes through it."""
    with FaultProxy(s3_endpoint, FaultPlan(kinds=("reset",), first_n=0)) as fault_proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", fault_proxy.url)
        yield fault_proxy


def direct(uri: str, s3_endpoint: str):
    """The store as seen by a reader that does not go through the proxy."""
    return open_store(uri, endpoint_url=s3_endpoint)


def test_preprocess_survives_resets_lost_answers_500s_and_slowdowns_byte_identical(
        proxy, s3_bucket, s3_endpoint, clean_snapshot):
    proxy.set_plan(FaultPlan(kinds=("reset", "lost", "500", "503"), first_n=4, fraction=0.2, seed=7))
    uri = s3_bucket + "/transient"
    manifest = preprocess(uri)

    kinds = {record.outcome for record in proxy.faults()}
    assert kinds == {"reset", "lost", "500", "503"}, f"not every fault kind was injected: {proxy.log}"
    assert len(proxy.faults()) >= 6
    reader = direct(uri, s3_endpoint)
    assert verify_dataset(reader, progress=False).dataset_hash == manifest.dataset_hash
    assert store_snapshot(reader) == clean_snapshot


def test_retried_uploads_of_shards_after_lost_answers_leave_no_duplicate_objects(proxy, s3_bucket, s3_endpoint,
                                                                                 clean_snapshot):
    # The first six PUTs are applied by the endpoint but their answers are lost: each is sent again.
    proxy.set_plan(FaultPlan(kinds=("lost",), first_n=6, methods=("PUT",)))
    uri = s3_bucket + "/lost-once"
    preprocess(uri)
    assert len(proxy.faults("lost")) == 6
    assert sorted(direct(uri, s3_endpoint).list()) == sorted(clean_snapshot)


def _small_retry_budget(monkeypatch, attempts: int) -> None:
    # The stage opens its store with the default 10 attempts per request (~1 min of back-off when an
    # outage never ends); the fast test gives it 2 attempts, the slow one below keeps the default.
    patched = functools.partial(open_store, max_attempts=attempts)
    monkeypatch.setattr(shards.write, "open_store", patched)


@pytest.mark.parametrize("kind", ["503", "reset", "403"])
def test_permanent_failure_mid_run_is_a_clear_error_and_leaves_no_manifest(
        proxy, s3_bucket, s3_endpoint, monkeypatch, kind, clean_snapshot):
    _small_retry_budget(monkeypatch, 2)
    # The plan and the first shards go through; from the 6th PUT on, every upload fails.
    proxy.set_plan(FaultPlan(kinds=(kind,), from_n=5, methods=("PUT",)))
    uri = s3_bucket + f"/outage-{kind}"
    with pytest.raises(StoreError) as failure:
        preprocess(uri)
    message = str(failure.value)
    assert "upload failed" in message and uri in message and "shards/" in message, message
    expected = {"503": "SlowDown", "403": "AccessDenied", "reset": "onnection"}[kind]
    assert expected in message, message
    assert proxy.faults(kind), "the outage was never hit"

    reader = direct(uri, s3_endpoint)
    assert "manifest.json" not in reader.list()
    with pytest.raises(ManifestNotFoundError, match="no manifest"):
        read_manifest(reader)

    # The outage ends: the re-run finishes the data set, byte-identical to an undisturbed run.
    proxy.set_plan(FaultPlan(kinds=("reset",), first_n=0))
    preprocess(uri)
    assert store_snapshot(reader) == clean_snapshot


@pytest.mark.slow
def test_outage_outlasting_the_default_retry_budget_fails_without_manifest(proxy, s3_bucket, s3_endpoint):
    proxy.set_plan(FaultPlan(kinds=("503",), from_n=0, methods=("PUT",)))
    uri = s3_bucket + "/long-outage"
    with pytest.raises(StoreError, match="SlowDown"):
        preprocess(uri)
    assert len(proxy.faults("503")) == 10  # S3Options.max_attempts: every attempt was made
    assert direct(uri, s3_endpoint).list() == []
