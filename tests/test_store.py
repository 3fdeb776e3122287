"""The object store: same behaviour over a local folder and a real S3 endpoint (moto's server)."""

from __future__ import annotations

import os
import pickle
import threading

import boto3
import pytest

from signpose import store as store_mod
from signpose.store import InvalidKeyError, LocalStore, ObjectNotFoundError, S3Store, join_key, open_store


@pytest.fixture(params=["local", "s3"])
def store_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    return bucket + "/some/prefix"


def test_put_get_roundtrip_list_and_delete(store_uri):
    store = open_store(store_uri)
    store.put_bytes("a/b/one.bin", b"\x00one")
    store.put_bytes("a/two.bin", b"two")
    store.put_bytes("z.txt", b"")
    assert store.get_bytes("a/b/one.bin") == b"\x00one"
    assert store.get_bytes("z.txt") == b""
    assert store.exists("a/two.bin") and not store.exists("a/three.bin")
    assert store.size("a/b/one.bin") == 4
    assert store.list() == ["a/b/one.bin", "a/two.bin", "z.txt"]
    assert store.list("a/") == ["a/b/one.bin", "a/two.bin"]
    store.delete("a/two.bin")
    store.delete("a/two.bin")  # deleting a missing object is not an error
    assert store.list("a/") == ["a/b/one.bin"]


def test_overwrite_replaces_the_whole_object(store_uri):
    store = open_store(store_uri)
    store.put_bytes("k", b"long old content")
    store.put_bytes("k", b"new")
    assert store.get_bytes("k") == b"new"


def test_missing_object_error_names_the_key(store_uri):
    store = open_store(store_uri)
    with pytest.raises(ObjectNotFoundError, match="nothing/here"):
        store.get_bytes("nothing/here")
    with pytest.raises(FileNotFoundError):
        store.size("nothing/here")


# --- conditional writes (compare-and-set): what signpose.tracking.lease builds on -------------------------

def test_conditional_create_and_replace_check_the_etag(store_uri):
    store = open_store(store_uri)
    etag = store.put_if_absent("locks/a.json", b"first")
    assert etag and store.put_if_absent("locks/a.json", b"second") is None  # exists: refused
    assert store.get_with_etag("locks/a.json") == (b"first", etag)
    newer = store.replace_if_match("locks/a.json", b"third", etag)
    assert newer and newer != etag
    assert store.replace_if_match("locks/a.json", b"stale writer", etag) is None
    assert store.get_with_etag("locks/a.json") == (b"third", newer)
    store.delete("locks/a.json")
    assert store.get_with_etag("locks/a.json") is None
    # Gone: nothing to replace; a create works again.
    assert store.replace_if_match("locks/a.json", b"x", newer) is None
    assert store.put_if_absent("locks/a.json", b"again")
    assert store.list() == ["locks/a.json"]


def test_of_concurrent_conditional_creates_exactly_one_wins(store_uri):
    store = open_store(store_uri)
    barrier, results = threading.Barrier(6), {}

    def create(i):
        barrier.wait()
        results[i] = store.put_if_absent("lock.json", f"writer {i}".encode())

    threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, etag in results.items() if etag is not None]
    assert len(results) == 6 and len(winners) == 1
    assert store.get_with_etag("lock.json") == (f"writer {winners[0]}".encode(), results[winners[0]])


def test_compare_and_set_increments_from_many_threads_lose_no_update(store_uri):
    store = open_store(store_uri)
    store.put_if_absent("counter", b"0")
    barrier = threading.Barrier(4)

    def increment_ten_times():
        barrier.wait()
        for _ in range(10):
            while True:
                data, etag = store.get_with_etag("counter")
                if store.replace_if_match("counter", str(int(data) + 1).encode(), etag) is not None:
                    break

    threads = [threading.Thread(target=increment_ten_times) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.get_bytes("counter") == b"40"


def test_local_conditional_writes_leave_no_temporary_files(tmp_path):
    store = LocalStore(tmp_path)
    etag = store.put_if_absent("d/k", b"one")
    assert store.put_if_absent("d/k", b"two") is None
    assert store.replace_if_match("d/k", b"three", "not-the-etag") is None
    store.replace_if_match("d/k", b"four", etag)
    assert os.listdir(tmp_path / "d") == ["k"] and store.get_bytes("d/k") == b"four"


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "/abs/path", "a//b", "a/./b", "", "a\\b"])
def test_keys_escaping_the_root_are_refused(store_uri, key):
    store = open_store(store_uri)
    with pytest.raises(InvalidKeyError):
        store.put_bytes(key, b"x")
    with pytest.raises(InvalidKeyError):
        store.get_bytes(key)


def test_join_builds_clean_keys():
    assert join_key("shards/", "/x.npz") == "shards/x.npz"
    assert open_store("/tmp").join("a", "b", "c") == "a/b/c"
    with pytest.raises(InvalidKeyError):
        join_key("a", "..", "b")


def test_local_symlink_out_of_the_root_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    store = LocalStore(tmp_path / "root")
    (tmp_path / "root").mkdir()
    os.symlink(outside, tmp_path / "root" / "link")
    with pytest.raises(InvalidKeyError):
        store.put_bytes("link/file", b"x")
    assert not (outside / "file").exists()


def test_local_failed_write_leaves_old_object_and_no_temp_file(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    store.put_bytes("obj", b"old")

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(store_mod.os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        store.put_bytes("obj", b"new content")
    monkeypatch.undo()
    assert store.get_bytes("obj") == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obj"]


def test_local_listing_ignores_in_flight_temp_files(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes("d/real", b"1")
    (tmp_path / "d" / (".real.abc" + store_mod._TMP_SUFFIX)).write_bytes(b"partial")
    assert store.list() == ["d/real"]


def test_open_store_parses_uris(tmp_path):
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    local = open_store(f"file://{tmp_path}/x")
    assert isinstance(local, LocalStore) and local.uri == str(tmp_path / "x")
    assert open_store(local) is local
    with pytest.raises(ValueError, match="unsupported store URI"):
        open_store("gs://bucket/x")


def test_s3_uri_bucket_and_prefix(s3_bucket):
    store = open_store(s3_bucket + "/p/q/")
    assert isinstance(store, S3Store)
    assert store.uri == s3_bucket + "/p/q"
    assert store.url("k") == s3_bucket + "/p/q/k"


def test_s3_prefixes_in_one_bucket_are_isolated(s3_bucket):
    first, second = open_store(s3_bucket + "/first"), open_store(s3_bucket + "/second")
    first.put_bytes("k", b"1")
    second.put_bytes("k", b"2")
    assert first.get_bytes("k") == b"1" and second.get_bytes("k") == b"2"
    assert first.list() == ["k"]
    assert sorted(open_store(s3_bucket).list()) == ["first/k", "second/k"]


def test_s3_large_object_goes_through_multipart_upload(s3_bucket, s3_endpoint):
    mib = 1024 * 1024
    store = open_store(s3_bucket, multipart_threshold=5 * mib, multipart_chunksize=5 * mib)
    data = os.urandom(11 * mib)
    store.put_bytes("big.bin", data)
    assert store.get_bytes("big.bin") == data
    head = boto3.client("s3").head_object(Bucket=s3_bucket[len("s3://"):], Key="big.bin")
    # A multipart object's ETag is "<md5 of part md5s>-<number of parts>".
    assert head["ETag"].strip('"').endswith("-3")


def test_s3_client_uses_configured_retries(s3_bucket):
    store = open_store(s3_bucket, retry_mode="standard", max_attempts=7)
    assert store.client.meta.config.retries == {"mode": "standard", "total_max_attempts": 7}
    assert open_store(s3_bucket).client.meta.config.retries["mode"] == "adaptive"


def test_s3_endpoint_from_env_or_argument(s3_bucket, s3_endpoint, monkeypatch):
    open_store(s3_bucket).put_bytes("k", b"v")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert open_store(s3_bucket, endpoint_url=s3_endpoint).get_bytes("k") == b"v"
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_endpoint)
    assert open_store(s3_bucket).get_bytes("k") == b"v"


def test_s3_store_survives_pickling_for_worker_processes(s3_bucket):
    store = open_store(s3_bucket + "/p")
    store.put_bytes("k", b"v")
    clone = pickle.loads(pickle.dumps(store))
    assert clone.uri == store.uri and clone.get_bytes("k") == b"v"


def test_s3_missing_bucket_is_a_clear_error(s3_endpoint):
    store = open_store("s3://no-such-bucket-xyz/p")
    with pytest.raises(store_mod.StoreError, match="no-such-bucket-xyz"):
        store.put_bytes("k", b"v")
    with pytest.raises(store_mod.StoreError, match="no-such-bucket-xyz"):
        store.list()


# ---- signpose's own S3 variables (what pipeline pods get; KFP's launcher reads AWS_*) ----------------

def test_signpose_s3_variables_reach_the_client_instead_of_the_aws_ones(s3_bucket, monkeypatch):
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata credential lookup
    monkeypatch.setenv("SIGNPOSE_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("SIGNPOSE_S3_ACCESS_KEY_ID", "SIGNPOSEKEYID")
    monkeypatch.setenv("SIGNPOSE_S3_SECRET_ACCESS_KEY", "signpose-secret")
    monkeypatch.setenv("SIGNPOSE_S3_REGION", "eu-west-1")
    store = open_store(s3_bucket + "/pods")
    signed = []
    store.client.meta.events.register("before-send.s3", lambda request, **_: signed.append(request.headers["Authorization"]))
    store.put_bytes("k.bin", b"data")
    assert store.get_bytes("k.bin") == b"data"
    assert store.client.meta.region_name == "eu-west-1"
    assert signed and all(b"Credential=SIGNPOSEKEYID/" in (h if isinstance(h, bytes) else h.encode()) for h in signed)


def test_plain_aws_variables_still_work_when_the_signpose_ones_are_absent(s3_bucket, monkeypatch):
    for name in ("SIGNPOSE_S3_ENDPOINT_URL", "SIGNPOSE_S3_ACCESS_KEY_ID", "SIGNPOSE_S3_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    store = open_store(s3_bucket + "/dev")
    store.put_bytes("k.bin", b"local")
    assert store.get_bytes("k.bin") == b"local"


def test_half_a_signpose_key_pair_is_refused_by_name(monkeypatch):
    from signpose.s3_env import S3EnvError

    monkeypatch.setenv("SIGNPOSE_S3_ACCESS_KEY_ID", "only-the-id")
    monkeypatch.delenv("SIGNPOSE_S3_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(S3EnvError, match="SIGNPOSE_S3_SECRET_ACCESS_KEY is not set"):
        open_store("s3://bucket/prefix")
