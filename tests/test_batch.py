"""`edge-runtime batch`: many files, one failure reported and the rest done, a rerun skips what
is done, the same outputs as `run`, local pool and (when installed) a local Dask cluster."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from conftest import run_cli


@pytest.fixture
def archive(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for i in range(4):
        sf.write(src / f"f{i}.wav", (rng.standard_normal(16000) * 0.1).astype(np.float32), 16000)
    sf.write(src / "sub" / "g.flac", (rng.standard_normal(8000) * 0.1).astype(np.float32), 16000)
    (src / "f2_bad.wav").write_bytes(b"RIFF" + rng.bytes(400))         # corrupt, in the middle
    return src


def test_a_corrupt_file_is_reported_and_the_rest_done_then_a_rerun_skips(tmp_path, archive):
    out = tmp_path / "out"
    r = run_cli("batch", "default", "-i", archive, "-o", out, "-j", "2", "--json")
    assert r.returncode == 1, r.stderr.decode()
    rep = json.loads(r.stdout)
    assert rep["files"] == 6 and rep["done"] == 5 and rep["skipped"] == 0
    assert [f["input"].endswith("f2_bad.wav") for f in rep["failed"]] == [True]
    assert "not a readable audio file" in rep["failed"][0]["error"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.suffix != ".jsonl") == \
        ["f0.wav", "f1.wav", "f2.wav", "f3.wav", "sub/g.flac"]
    # the same output as `run`
    r1 = run_cli("run", "default", "-i", archive / "f1.wav", "-o", tmp_path / "one.wav")
    assert r1.returncode == 0
    assert np.array_equal(sf.read(out / "f1.wav")[0], sf.read(tmp_path / "one.wav")[0])
    # a rerun: the five done are skipped, the bad one tried (and reported) again
    r = run_cli("batch", "default", "-i", archive, "-o", out, "--json")
    rep = json.loads(r.stdout)
    assert r.returncode == 1 and rep["skipped"] == 5 and rep["done"] == 0 and len(rep["failed"]) == 1
    # a changed input is done again
    sf.write(archive / "f0.wav", np.zeros(4000, np.float32), 16000)
    (archive / "f2_bad.wav").unlink()
    r = run_cli("batch", "default", "-i", archive, "-o", out, "--json")
    rep = json.loads(r.stdout)
    assert r.returncode == 0 and rep["done"] == 1 and rep["skipped"] == 4 and sf.info(out / "f0.wav").frames == 4000


def test_glob_input_and_bad_arguments(tmp_path, archive):
    out = tmp_path / "o"
    r = run_cli("batch", "default", "-i", str(archive / "f[01].wav"), "-o", out, "--json", "-j", "1")
    rep = json.loads(r.stdout)
    assert r.returncode == 0 and rep["done"] == 2 and (out / "f0.wav").exists()
    r = run_cli("batch", "default", "-i", str(tmp_path / "nothing*.wav"), "-o", out)
    assert r.returncode == 2 and "no audio files there" in r.stderr.decode()
    r = run_cli("batch", "no_such_pipeline", "-i", archive, "-o", out)
    assert r.returncode == 2 and "unknown pipeline 'no_such_pipeline'" in r.stderr.decode()


def test_dask_engine_on_a_local_cluster(tmp_path, archive):
    pytest.importorskip("dask.distributed", reason="dask[distributed] not installed (pip install 'edge-runtime[dask]')")
    out = tmp_path / "d"
    r = run_cli("batch", "default", "-i", archive, "-o", out, "-j", "2", "--engine", "dask", "--json")
    rep = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert r.returncode == 1 and rep["engine"] == "dask" and rep["done"] == 5 and len(rep["failed"]) == 1


def test_ray_engine_on_a_local_cluster_of_2_workers(tmp_path, archive):
    pytest.importorskip("ray", reason="ray not installed (pip install 'edge-runtime[ray]')")
    out = tmp_path / "r"
    r = run_cli("batch", "default", "-i", archive, "-o", out, "-j", "2", "--engine", "ray", "--json")
    rep = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert r.returncode == 1 and rep["engine"] == "ray" and rep["jobs"] == 2, r.stderr.decode()[-2000:]
    assert rep["done"] == 5 and len(rep["failed"]) == 1 and rep["failed"][0]["input"].endswith("f2_bad.wav")
    # the same outputs as `run` (one Ray start only: 10-20 s on 2 cores)
    r1 = run_cli("run", "default", "-i", archive / "f1.wav", "-o", tmp_path / "one.wav")
    assert r1.returncode == 0
    assert np.array_equal(sf.read(out / "f1.wav")[0], sf.read(tmp_path / "one.wav")[0])
    assert sum(1 for line in (out / ".edge_runtime-batch.jsonl").read_text().splitlines()) == 6
