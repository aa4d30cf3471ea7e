"""Preset recommendation (issue 26): the library index, the listener model and its state, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.errors import ConfigError
from edge_runtime.optimize import make_chain
from edge_runtime.optimize.preset import write_preset
from edge_runtime.optimize.recommend import Population, PresetLibrary, Recommender, index_folder
from edge_runtime.state import StateError


def _folder(tmp_path, n=12):
    """Presets in three families (dark slow pads, bright short leads, noisy hits), four of each."""
    chain = make_chain("synth")
    rng = np.random.default_rng(0)
    fams = {"pad": dict(cutoff_hz=300.0, attack_s=0.5, sine=1.0, saw=0.0, noise=0.0, note=48.0),
            "lead": dict(cutoff_hz=5000.0, attack_s=0.003, saw=1.0, sine=0.0, noise=0.0, note=72.0),
            "hit": dict(cutoff_hz=3000.0, attack_s=0.001, noise=1.0, saw=0.0, sine=0.0, sustain=0.0, note=60.0)}
    for k in range(n):
        fam = list(fams)[k % 3]
        p = dict(fams[fam])
        p["cutoff_hz"] *= float(rng.uniform(0.8, 1.25))
        p["note"] += float(rng.integers(-3, 4))
        write_preset(tmp_path / f"{fam}_{k}.toml", chain, p)
    return tmp_path


def test_index_groups_presets_that_sound_alike(tmp_path):
    lib = index_folder(_folder(tmp_path))
    assert len(lib) == 12 and lib.embedding.shape == (12, 12) and (tmp_path / "library.state").is_file()
    for name in ("pad_0", "lead_1", "hit_2"):
        i = lib.index_of(name)
        near = [lib.names[j] for j in lib.neighbours(i, 3)]
        assert all(n.split("_")[0] == name.split("_")[0] for n in near), (name, near)
    again = PresetLibrary.load(tmp_path / "library.state")
    assert again.names == lib.names and np.array_equal(again.embedding, lib.embedding)


def test_answers_move_the_ranking_towards_what_the_listener_accepts(tmp_path):
    lib = index_folder(_folder(tmp_path))
    rec = Recommender(lib)
    fam = lambda i: lib.names[i].split("_")[0]  # noqa: E731
    rec.feedback(lib.index_of("lead_1"), "lead", True)
    rec.feedback(lib.index_of("pad_0"), "lead", False)
    top = rec.recommend("lead", n=3, explore=False)
    assert [fam(i) for i in top] == ["lead"] * 3 and lib.index_of("lead_1") not in top   # new ones only
    # another context learns from it, less
    m_lead, _ = rec.posterior(np.array([lib.index_of("lead_4")]), "lead")
    m_pad, _ = rec.posterior(np.array([lib.index_of("lead_4")]), "pad")
    assert m_lead[0] > m_pad[0] > 0.0


def test_population_prior_ranks_for_a_new_listener(tmp_path):
    lib = index_folder(_folder(tmp_path))
    users = []
    for k in range(5):             # everyone likes pads in the pad context
        r = Recommender(lib)
        for i, name in enumerate(lib.names):
            r.feedback(i, "pad", name.startswith("pad"))
        users.append(r)
    pop = Population.fit(lib, users)
    new = Recommender(lib, pop)
    assert all(lib.names[i].startswith("pad") for i in new.recommend("pad", n=4, explore=False))
    pop.save(tmp_path / "pop.state")
    assert np.allclose(Population.load(tmp_path / "pop.state").prior, pop.prior)


def test_state_round_trip_and_refusals(tmp_path):
    lib = index_folder(_folder(tmp_path))
    r = Recommender(lib, user="ana")
    r.feedback(3, "bass", True)
    r.feedback(5, "fx", False)
    r.save(tmp_path / "ana.state")
    back = Recommender.load(tmp_path / "ana.state", lib)
    assert back.answers == 2 and back.shown == {3, 5} and back.user == "ana"
    assert np.allclose(back.posterior(np.arange(12), "bass")[0], r.posterior(np.arange(12), "bass")[0])
    small = PresetLibrary(lib.names[:6], lib.embedding[:6])
    with pytest.raises(StateError, match="library of 12 presets"):
        Recommender.load(tmp_path / "ana.state", small)
    raw = bytearray((tmp_path / "ana.state").read_bytes())
    raw[-40] ^= 1
    (tmp_path / "bad.state").write_bytes(bytes(raw))
    with pytest.raises(StateError):
        Recommender.load(tmp_path / "bad.state", lib)
    with pytest.raises(ConfigError, match="context 'drums'; expected one of lead, bass, pad, fx"):
        r.recommend("drums")


def test_cli_index_recommend_feedback(cli, tmp_path):
    (tmp_path / "p").mkdir()
    folder = _folder(tmp_path / "p")
    state = tmp_path / "state"
    r = cli("preset", "recommend", folder, "--user", "ana", "--state-dir", state)
    assert r.returncode == 2 and "no library.state; index it first: edge-runtime preset index" in r.stderr.decode()
    r = cli("preset", "index", folder)
    assert r.returncode == 0 and "12 synth presets" in r.stdout.decode(), r.stderr.decode()
    r = cli("preset", "feedback", folder, "--user", "ana", "--context", "lead", "--preset", "lead_1", "--accept",
            "--state-dir", state)
    assert "1 answers" in r.stdout.decode() and (state / "presets" / "ana.state").is_file()
    r = cli("preset", "recommend", folder, "--user", "ana", "--context", "lead", "--top", "2", "--json",
            "--state-dir", state)
    got = json.loads(r.stdout)
    assert got["answers"] == 1 and [p["preset"].split("_")[0] for p in got["presets"]] == ["lead", "lead"]
    r = cli("preset", "feedback", folder, "--user", "ana", "--preset", "nope", "--reject", "--state-dir", state)
    assert r.returncode == 2 and "no preset named 'nope'" in r.stderr.decode()
