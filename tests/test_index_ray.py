"""``dermretr index --engine ray``: Ray Data encoding against the single-process path, restarts, changes, errors.

One local Ray cluster (2 CPUs) serves the whole module.  The model is an untrained tiny ``full`` retriever (global
and local vectors) at 64 px, the data 48 DermSynth cases, cut in shards of 10 (or 8) cases.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from index_fixtures import dead_pid

from dermretr._errors import DermretrError, OutputError
from dermretr.cli import main
from dermretr.index import CaseIndex, IndexWarning, _shards, _stream, encode_archive
from dermretr.index import _ray as ray_engine

N_CASES, SHARD = 48, 10
QUERIES = [(3, "blue-whitish veil"), (17, ""), (30, "irregular streaks, atypical pigment network"),
           (44, "regular dots")]
# The Ray path runs the same model on the same images, but in other batches (cut at shard boundaries) and with
# other torch thread counts than the single-process reference, so float32 sums come in another order: the vectors
# agree to about 1e-7; 1e-5 leaves room for that and is still far below any difference a ranking could notice.
ATOL = 1e-5


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster for the module (started once; every test of the module reuses it)."""
    try:
        import ray
    except ImportError:
        pytest.fail('Ray is missing: the tests need the [dev] extras, pip install -e ".[dev]" (it brings '
                    '"dermretr[scale]")')
    # idle task workers are kept (Ray would end them once the actors' pass has taken the CPUs, and every later
    # hashing pass would wait some 6 s for new ones): the module runs in half a minute less
    ray_engine._init_local(ray, num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=200 << 20,
                           logging_level="ERROR", log_to_driver=False,
                           _system_config={"idle_worker_killing_time_threshold_ms": 600_000,
                                           "num_workers_soft_limit": 8})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """48 DermSynth cases at 64 px, a tiny full retriever saved as a run's best.pt, and the single-process index."""
    import torch

    from dermretr.data import load
    from dermretr.data.synth import generate
    from dermretr.models.backbones import create
    from dermretr.models.retriever import Retriever

    tmp = tmp_path_factory.mktemp("ray")
    root = generate(tmp / "ds", n_cases=N_CASES, seed=5, image_size=64, workers=1, progress=False)
    cases = load("synthetic", root)
    torch.manual_seed(0)
    model = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    ckpt = model.save(tmp / "run" / "checkpoints" / "best.pt")
    reference = CaseIndex.build(model, cases, kind="flat", checkpoint=ckpt)
    reference.save(tmp / "reference")
    return {"tmp": tmp, "root": root, "cases": cases, "model": model, "ckpt": ckpt, "reference": reference}


@pytest.fixture(scope="module")
def flat_run(ray_cluster, archive):
    """The Ray path's flat index of the archive, its shards kept; FAISS gets the vectors 7 rows at a time."""
    out = archive["tmp"] / "flat"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_stream, "ADD_ROWS", 7)
        run = encode_archive(archive["ckpt"], archive["cases"], out, shard_size=SHARD, keep_shards=True)
    return run


def shard_arrays(folder, n_masks=2, dim=128):
    store = _shards.ShardStore(folder)
    ranges = _shards.shard_ranges(N_CASES, SHARD)
    parts = [store.read(i, b - a, dim, n_masks) for i, (a, b) in enumerate(ranges)]
    return np.concatenate([g for g, _ in parts]), np.concatenate([loc for _, loc in parts])


def search_all(index: CaseIndex, cases, k: int = 5):
    return [index.search(cases["image_path"].iloc[row], text, k=k) for row, text in QUERIES]


def stats(folder):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


def no_temporaries(*folders):
    left = [p.name for folder in folders for p in folder.iterdir() if ".dermretr-" in p.name]
    assert not left, left


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------------------- (a), (b): the same vectors and index


def test_ray_vectors_equal_the_single_process_ones(flat_run, archive):
    assert (flat_run.count, flat_run.shards, flat_run.encoded, flat_run.reused) == (N_CASES, 5, 5, 0)
    g, local = shard_arrays(flat_run.path.with_name("flat.shards"))
    want = archive["model"].encode_targets(archive["cases"]["image_path"].tolist())
    assert g.dtype == local.dtype == np.float32  # the shards keep exactly what encode_targets gives
    assert np.abs(g - want.global_vectors).max() <= ATOL
    assert np.abs(local - want.local_vectors).max() <= ATOL
    assert np.abs(want.global_vectors).max() > 0.01  # not two zero matrices
    index = CaseIndex.open(flat_run.path, device="cpu")
    assert np.abs(np.asarray(index.global_vectors) - want.global_vectors).max() <= ATOL
    assert index.local_vectors.dtype == np.float16
    assert np.abs(index.local_vectors.astype(np.float32) - want.local_vectors).max() <= 1e-3  # float16 storage


def test_ray_index_opens_and_searches_like_the_single_process_one(flat_run, archive):
    reference, cases = archive["reference"], archive["cases"]
    index = CaseIndex.open(flat_run.path, device="cpu")
    assert len(index) == N_CASES and index.kind == "flat"
    for got, want in zip(search_all(index, cases), search_all(reference, cases)):
        assert got["case_id"].tolist() == want["case_id"].tolist()
        np.testing.assert_allclose(got[["score", "s_global", "s_local"]].to_numpy(),
                                   want[["score", "s_global", "s_local"]].to_numpy(), atol=ATOL)
    ours, theirs = dict(index.manifest), CaseIndex.read_manifest(archive["tmp"] / "reference")
    assert ours.pop("created") and theirs.pop("created")
    assert ours == theirs  # model (checkpoint path and sha256, weights), params, columns, case ids, file sizes
    assert (flat_run.path / "cases.csv").read_bytes() == (archive["tmp"] / "reference" / "cases.csv").read_bytes()
    assert flat_run.manifest == index.manifest


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivfpq"])
def test_other_kinds_from_kept_shards_encode_nothing_and_search_alike(flat_run, archive, kind, monkeypatch):
    out = archive["tmp"] / kind
    shutil.copytree(flat_run.path.with_name("flat.shards"), out.with_name(f"{kind}.shards"))
    monkeypatch.setattr(_stream, "TRAIN_POINTS_PER_LIST", 16)  # IVF trains on a seeded sample, not every row
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IndexWarning)  # 48 cases are few for IVF lists and PQ codes
        run = encode_archive(archive["ckpt"], archive["cases"], out, kind=kind, shard_size=SHARD, seed=3)
        reference = CaseIndex.build(archive["model"], archive["cases"], kind=kind, checkpoint=archive["ckpt"], seed=3)
    assert (run.encoded, run.reused) == (0, 5)
    assert not out.with_name(f"{kind}.shards").exists()  # removed once the index is saved
    index = CaseIndex.open(out, device="cpu")
    assert index.kind == kind and index.manifest["params"] == reference.manifest["params"]
    for got, want in zip(search_all(index, archive["cases"]), search_all(reference, archive["cases"])):
        assert got["case_id"].iloc[:3].tolist() == want["case_id"].iloc[:3].tolist()
        np.testing.assert_allclose(got["score"].iloc[:3], want["score"].iloc[:3], atol=ATOL)


# ---------------------------------------------------------------------------- (c), (d): restarts and changes

KILLED_DRIVER = """
import sys, time
from dermretr.index import _shards
real = _shards.ShardStore.write
def write(self, *args, **kwargs):
    real(self, *args, **kwargs)
    time.sleep(300)  # the test kills this driver here, once its first shard is written
_shards.ShardStore.write = write
from dermretr.cli import main
sys.exit(main(sys.argv[1:]))
"""


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {seconds} s")
        time.sleep(0.1)


@pytest.mark.slow
def test_a_rerun_after_the_driver_is_killed_encodes_only_missing_shards(ray_cluster, archive, tmp_path, capsys):
    out, shards = tmp_path / "idx", tmp_path / "idx.shards"
    args = ["index", "--engine", "ray", "--run", str(archive["tmp"] / "run"), "--data", f"synthetic:{archive['root']}",
            "--out", str(out), "--shard-size", "8", "--no-progress"]
    address = ray_cluster.get_runtime_context().gcs_address
    log = tmp_path / "killed.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-c", KILLED_DRIVER, *args, "--address", address, "--workers", "1"],
                                stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: proc.poll() is not None or any(shards.glob("shard-*.json")), 150,
                   "the driver wrote no shard")
        assert proc.poll() is None, log.read_text()[-2000:]
    finally:
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    written = stats(shards)
    assert len([n for n in written if n.startswith("shard-") and n.endswith(".json")]) == 1 and not out.exists()
    # the cluster ends the dead driver's job: its actors go and give their CPUs back
    cluster = ray_cluster.cluster_resources()["CPU"]
    wait_until(lambda: ray_cluster.available_resources().get("CPU", 0) == cluster, 60,
               "the killed driver's Ray actors did not go")

    assert main([*args, "--keep-shards"]) == 0  # this process's own cluster: no --address needed
    printed = capsys.readouterr().out
    assert "Ray: 6 shards, 5 encoded, 1 reused" in printed, printed
    after = stats(shards)
    assert {n: after[n] for n in written} == written  # the reused shard was not written again (mtime and bytes)
    assert len(after) == 13  # 6 shards (.npz, .json) and the owner marker
    no_temporaries(tmp_path, shards)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "idx.shards", "killed.log"]
    assert ray_cluster.is_initialized()  # a cluster this run did not start is left running
    index = CaseIndex.open(out, device="cpu")
    for got, want in zip(search_all(index, archive["cases"]), search_all(archive["reference"], archive["cases"])):
        assert got["case_id"].tolist() == want["case_id"].tolist()
        np.testing.assert_allclose(got["score"], want["score"], atol=ATOL)


def test_a_changed_image_reencodes_only_its_shard(flat_run, archive, monkeypatch):
    from PIL import Image

    cases, row = archive["cases"], 23  # shard 2 (rows 20..29)
    out = archive["tmp"] / "changed"
    shutil.copytree(flat_run.path.with_name("flat.shards"), out.with_name("changed.shards"))
    image = cases["image_path"].iloc[row]
    original = open(image, "rb").read()
    written = []
    real = _shards.ShardStore.write

    def spy(self, i, *args, **kwargs):
        written.append(i)
        return real(self, i, *args, **kwargs)

    monkeypatch.setattr(_shards.ShardStore, "write", spy)
    try:
        Image.open(image).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(image, quality=95)  # same path, new bytes
        run = encode_archive(archive["ckpt"], cases, out, shard_size=SHARD)
        want = archive["model"].encode_targets([image])
    finally:
        with open(image, "wb") as f:
            f.write(original)
    assert (run.encoded, run.reused, written) == (1, 4, [2])
    assert not out.with_name("changed.shards").exists()
    no_temporaries(out.parent)
    index = CaseIndex.open(out, device="cpu")
    g = np.asarray(index.global_vectors)
    assert np.abs(g[row] - want.global_vectors[0]).max() <= ATOL
    before = np.asarray(CaseIndex.load(flat_run.path).global_vectors)
    assert np.abs(g[row] - before[row]).max() > 1e-3  # the flipped image has another vector
    assert np.array_equal(np.delete(g, row, axis=0), np.delete(before, row, axis=0))


# ---------------------------------------------------------------------------- (e): errors


def index_args(archive, tmp_path, *extra):
    return ["index", "--run", str(archive["tmp"] / "run"), "--data", f"synthetic:{archive['root']}",
            "--out", str(tmp_path / "idx"), "--no-progress", *extra]


def test_without_ray_the_engine_says_how_to_install_it(archive, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is not installed
    assert main(index_args(archive, tmp_path, "--engine", "ray")) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith("dermretr: error: ") and 'pip install "dermretr[scale]"' in err
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DermretrError, match=r'pip install "dermretr\[scale\]"'):
        encode_archive(archive["ckpt"], archive["cases"], tmp_path / "idx")


@pytest.mark.parametrize("extra, message", [
    (["--engine", "ray", "--workers", "0"], "workers (--workers, Ray actors encoding at once) must be at least 1, "
                                            "got 0"),
    (["--engine", "ray", "--gpus-per-worker", "-1"], "--gpus-per-worker) must be a number >= 0"),
    (["--engine", "ray", "--gpus-per-worker", "1.5"], "a fraction below 1 (GPUs shared by several workers) or a whole"),
    (["--engine", "ray", "--shard-size", "0"], "shard_size (--shard-size, cases per shard) must be at least 1, got 0"),
    (["--engine", "ray", "--address", "127.0.0.1:1"], "cannot reach a Ray cluster at --address 127.0.0.1:1"),
    (["--engine", "ray", "--address", "no-port-here"], "--address 'no-port-here' is not a Ray cluster address"),
    (["--engine", "ray", "--device", "cuda"], "device 'cuda' needs GPUs on the Ray workers"),
    (["--engine", "ray", "--device", "cpu", "--gpus-per-worker", "1"], "device 'cpu' leaves the 1 GPU(s) per worker"),
    (["--engine", "ray", "--gpus-per-worker", "1"], "--gpus-per-worker 1 asks for GPUs, but the Ray cluster has 0"),
    (["--workers", "2", "--shard-size", "8"], "--workers, --shard-size are for --engine ray only"),
    (["--gpus-per-worker", "0"], "--gpus-per-worker is for --engine ray only"),
    (["--engine", "local", "--address", "auto", "--keep-shards"], "--address, --keep-shards are for --engine ray only"),
])
def test_bad_ray_options_are_one_line_errors(ray_cluster, archive, tmp_path, capsys, extra, message):
    assert main(index_args(archive, tmp_path, *extra)) == 2
    err = one_line(capsys.readouterr().err)
    assert message in err, err
    assert list(tmp_path.iterdir()) == []  # nothing written: no index, no shards folder, no lock


def test_a_user_folder_where_the_shards_go_is_refused(ray_cluster, archive, tmp_path, capsys):
    mine = tmp_path / "idx.shards"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert main(index_args(archive, tmp_path, "--engine", "ray")) == 2
    assert "holds files that dermretr did not write (notes.txt)" in one_line(capsys.readouterr().err)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and not (tmp_path / "idx").exists()


def test_an_unreadable_image_is_one_line_naming_it_and_its_case(ray_cluster, archive, tmp_path):
    cases = archive["cases"].copy()
    cases.loc[13, "image_path"] = str(tmp_path / "gone.jpg")
    with pytest.raises(DermretrError) as info:  # raised in a Ray task, it comes back as it was raised
        encode_archive(archive["ckpt"], cases, tmp_path / "idx", shard_size=SHARD)
    message = str(info.value)
    assert "\n" not in message and f"case image: cannot read {tmp_path / 'gone.jpg'}" in message, message
    assert repr(cases.loc[13, "case_id"]) in message
    assert not (tmp_path / "idx").exists()  # no index
    # the shards that other actors finished before the error are kept for the rerun (whole, nothing else)
    shards = tmp_path / "idx.shards"
    kept = sorted(p.name for p in shards.iterdir()) if shards.exists() else []
    assert all(re.fullmatch(r"shard-00000[02-4]\.(npz|json)|\.dermretr\.json", name) for name in kept), kept
    assert [p for p in tmp_path.iterdir() if p.name not in ("idx.shards",)] == []


def test_a_model_must_be_loadable_by_the_workers(archive, tmp_path):
    with pytest.raises(DermretrError, match=r"model must be a checkpoint file or a pretrained model's name or folder"):
        encode_archive(archive["model"], archive["cases"], tmp_path / "idx")
    with pytest.raises(OutputError, match="already holds an index; pass overwrite=True"):
        encode_archive(archive["ckpt"], archive["cases"], archive["tmp"] / "reference")


class FakeRay:
    """Records what the engine asks of Ray's connection functions."""

    def __init__(self, initialized: bool):
        self.initialized, self.calls = initialized, []

    def is_initialized(self):
        return self.initialized

    def init(self, **kwargs):
        self.calls.append(("init", kwargs.get("address"), kwargs.get("num_cpus")))
        self.initialized = True

    def shutdown(self):
        self.calls.append(("shutdown",))
        self.initialized = False

    def get_runtime_context(self):
        return type("Context", (), {"gcs_address": "10.0.0.1:6379"})()


def test_a_cluster_is_shut_down_only_by_the_run_that_started_it():
    fake = FakeRay(initialized=False)
    with pytest.raises(KeyError), ray_engine._connected(fake, None, 3, 1 << 28) as local:
        assert local
        raise KeyError("a failure during the run")
    assert fake.calls == [("init", "local", max(3, os.cpu_count() or 1)), ("shutdown",)]
    fake = FakeRay(initialized=False)
    with ray_engine._connected(fake, "10.0.0.1:6379", 3, 1 << 28) as local:
        assert not local
    assert fake.calls == [("init", "10.0.0.1:6379", None), ("shutdown",)]  # a connection we opened, closed
    fake = FakeRay(initialized=True)
    with ray_engine._connected(fake, "auto", 3, 1 << 28) as local:
        assert not local
    assert fake.calls == []  # the process's own connection is used and left open
    with pytest.raises(DermretrError, match="already connected to the Ray cluster at 10.0.0.1:6379, not 10.9.9.9:1"):
        with ray_engine._connected(fake, "10.9.9.9:1", 3, 1 << 28):
            pass


def _shard(shard, paths, stored=""):
    return {"shard": np.array([shard]), "start": np.array([0]), "stop": np.array([len(paths)]),
            "case_ids": [[f"c{i}" for i in range(len(paths))]], "paths": [paths], "stored": np.array([stored])}


class SlowStartRay(FakeRay):
    """A Ray whose local node misses its start-up deadline ``failures`` times (ray-project/ray#65983)."""

    def __init__(self, failures: int):
        super().__init__(initialized=False)
        self.failures = failures

    def init(self, **kwargs):
        super().init(**kwargs)
        if self.failures:
            self.failures -= 1
            self.initialized = False
            raise Exception("The current node timed out during startup. This could happen because some of the "
                            "raylet failed to startup or the GCS has become overloaded.")


def test_a_local_cluster_that_times_out_while_starting_is_started_again():
    fake = SlowStartRay(failures=2)
    with ray_engine._connected(fake, None, 2, 1 << 28) as local:
        assert local
    assert [c[0] for c in fake.calls] == ["init", "shutdown", "init", "shutdown", "init", "shutdown"]
    fake = SlowStartRay(failures=3)  # every attempt fails: one line, no traceback
    with pytest.raises(DermretrError, match="^cannot start a local Ray cluster: The current node timed out during "
                                            "startup"):
        with ray_engine._connected(fake, None, 2, 1 << 28):
            pass
    assert [c[0] for c in fake.calls].count("init") == ray_engine._START_ATTEMPTS


def test_the_encoder_actor_keys_each_shard_and_encodes_only_a_changed_one(archive, tmp_path):
    """The actor hashes the shard's images; a shard whose stored key is still right comes back without vectors."""
    from dermretr.index import model_info

    info = model_info(archive["model"])
    identity = {k: info[k] for k in ("config_hash", "weights_sha256")}
    encoder = ray_engine.ShardEncoder(str(archive["ckpt"]), True, "cpu", identity, "model-id", batch_size=4,
                                      threads=1, dim=128, n_masks=2)
    paths = archive["cases"]["image_path"].iloc[:5].tolist()
    out = encoder(_shard(7, paths))
    assert out["shard"].tolist() == [7] and out["error"].tolist() == [""]
    assert out["global"].shape == (1, 5, 128) and out["local"].shape == (1, 5, 2, 128)
    key = out["key"][0]
    assert key == _shards.hash_shard("model-id", 0, 5, [f"c{i}" for i in range(5)], paths)[0]
    expected = archive["model"].encode_targets(paths, batch_size=4)
    assert np.allclose(out["global"][0], expected.global_vectors, atol=1e-5)
    fresh = ray_engine.ShardEncoder(str(archive["ckpt"]), True, "cpu", identity, "model-id", 4, 1, 128, 2)
    assert fresh(_shard(7, paths, stored=key))["global"].shape == (1, 0, 128) and fresh.retriever is None
    reused = encoder(_shard(7, paths, stored=key))  # unchanged inputs: nothing encoded
    assert reused["error"].tolist() == [""] and reused["key"][0] == key
    assert reused["global"].shape == (1, 0, 128) and reused["local"].shape[1] == 0
    assert encoder(_shard(7, paths, stored="0" * 64))["global"].shape == (1, 5, 128)  # another key: encoded


def test_the_encoder_actor_says_what_went_wrong_as_data(archive, tmp_path):
    """What a worker cannot do comes back as a one-line message (Ray would bury a raised error in its own)."""
    from dermretr.index import model_info

    info = model_info(archive["model"])
    identity = {k: info[k] for k in ("config_hash", "weights_sha256")}
    encoder = ray_engine.ShardEncoder(str(archive["ckpt"]), True, "cpu", identity, "m", batch_size=4, threads=1,
                                      dim=128, n_masks=2)
    paths = archive["cases"]["image_path"].iloc[:5].tolist()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    out = encoder(_shard(2, [*paths[:2], str(broken)]))
    assert out["error"][0].startswith("case image: ") and str(broken) in out["error"][0]
    assert "\n" not in out["error"][0] and out["global"].shape == (1, 0, 128)
    out = encoder(_shard(3, [*paths[:2], str(tmp_path / "gone.jpg")]))  # unreadable while hashing
    assert out["error"][0].startswith("case image: cannot read") and "'c2'" in out["error"][0]
    other = ray_engine.ShardEncoder(str(archive["ckpt"]), True, "cpu", dict(identity, weights_sha256="0" * 64), "m",
                                    4, 1, 128, 2)
    assert "loaded another model" in other(_shard(0, paths))["error"][0]
    gone = ray_engine.ShardEncoder(str(tmp_path / "gone.pt"), True, "cpu", identity, "m", 4, 1, 128, 2)
    key = _shards.hash_shard("m", 0, 5, [f"c{i}" for i in range(5)], paths)[0]
    assert gone(_shard(0, paths, stored=key))["error"].tolist() == [""]  # a kept shard needs no model
    assert gone.retriever is None
    assert gone(_shard(0, paths))["error"][0].startswith("a Ray worker cannot load the model: checkpoint not found")


def test_the_shard_store_reuses_only_matching_shards_and_removes_only_its_own(tmp_path, recwarn):
    from dermretr import _io
    from dermretr.index import model_info

    store = _shards.ShardStore(tmp_path / "idx.shards").claim()
    rng = np.random.default_rng(0)
    g, local = rng.normal(size=(3, 8)).astype(np.float32), rng.normal(size=(3, 2, 8)).astype(np.float32)
    ids, paths, digests = ["a", "b", "c"], ["/x/a.jpg", "/x/b.jpg", "/x/c.jpg"], ["1" * 64, "2" * 64, "3" * 64]
    key = _shards.shard_key("model", 0, 3, ids, paths, digests)
    store.write(0, key, 0, 3, g, local)
    assert store.fresh(0, key, 3, 8, 2) and store.stored_key(0, 3, 8, 2) == key
    assert store.stored_key(0, 4, 8, 2) == "" and store.stored_key(1, 3, 8, 2) == ""  # other shapes; never written
    got = store.read(0, 3, 8, 2)
    assert np.array_equal(got[0], g) and np.array_equal(got[1], local)
    assert not any(store.fresh(0, key, *shape) for shape in ((4, 8, 2), (3, 8, 0), (3, 16, 2)))  # shapes checked
    assert not store.fresh(1, key, 3, 8, 2)  # never written
    for changed in (("model2", 0, 3, ids, paths, digests), ("model", 0, 3, ["a", "b", "d"], paths, digests),
                    ("model", 0, 3, ids, ["/x/a.jpg", "/y/b.jpg", "/x/c.jpg"], digests),
                    ("model", 0, 3, ids, paths, ["1" * 64, "2" * 64, "4" * 64]), ("model", 1, 4, ids, paths, digests)):
        assert not store.fresh(0, _shards.shard_key(*changed), 3, 8, 2), changed
    npz = tmp_path / "idx.shards" / "shard-000000.npz"
    data = npz.read_bytes()
    npz.write_bytes(b"\0" * len(data))  # same size, damaged: re-encoded, not trusted
    assert not store.fresh(0, key, 3, 8, 2) and store.stored_key(0, 3, 8, 2) == ""
    with pytest.raises(DermretrError, match="shard .*shard-000000.npz cannot be read .*delete it and run again"):
        store.read(0, 3, 8, 2)
    # the model identity: weights and config count, where the checkpoint lies does not
    from dermretr.models.backbones import create
    from dermretr.models.retriever import Retriever

    info = model_info(Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="image"))
    assert _shards.model_identity(info) == _shards.model_identity(dict(info, checkpoint_path="/elsewhere.pt"))
    assert _shards.model_identity(info) != _shards.model_identity(dict(info, weights_sha256="0" * 64))
    # a dead run's temporaries go on the next claim; a user's file is never deleted
    dead = tmp_path / "idx.shards" / f".shard-000001.npz.dermretr-{dead_pid()}-abcd1234.tmp"
    dead.write_bytes(b"half")
    _shards.ShardStore(tmp_path / "idx.shards").claim()
    assert not dead.exists()
    (tmp_path / "idx.shards" / "notes.txt").write_text("mine")
    assert not store.remove()
    assert sorted(p.name for p in (tmp_path / "idx.shards").iterdir()) == [_io.OWNER_FILE, "notes.txt"]
    assert any("dermretr did not write (notes.txt)" in str(w.message) for w in recwarn.list)
    (tmp_path / "idx.shards" / "notes.txt").unlink()
    assert store.remove() and list(tmp_path.iterdir()) == []
    assert not _shards.ShardStore(tmp_path / "never-claimed").remove()  # not marked as ours: left alone
