"""Fast tests of the denoise data builder (firmware_tools/data): mixing math, limits, split,
determinism, reserved-data refusal. Packages that are absent make their tests skip."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "firmware_tools" / "data"))

sf = pytest.importorskip("soundfile")
pytest.importorskip("scipy")
import build_denoise as B  # noqa: E402
import sources as S  # noqa: E402
import synth  # noqa: E402

SR = 16000


def _speechlike(n, rng, f0=140.0):
    t = np.arange(n) / SR
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12))
    env = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2  # syllable-rate envelope
    return (0.3 * x * env + 0.001 * rng.standard_normal(n)).astype(np.float32)


# ----------------------------------------------------------------------------- mixing math

@pytest.mark.parametrize("snr", [-5.0, 0.0, 5.0, 10.0, 20.0, 13.7])
def test_snr_achieved_equals_requested(snr):
    rng = np.random.default_rng(1)
    s = _speechlike(4 * SR, rng)
    for fam in ("white", "pink", "hum", "keyboard"):
        n = synth.synth_noise(fam, 4 * SR, SR, rng)
        for level in (-25.0, -10.0, -3.0):
            noisy, clean, info = B.mix(s, n, snr, level, SR)
            assert abs(B.snr_db(clean, noisy - clean) - snr) < 0.1
            assert abs(info["snr_achieved_db"] - snr) < 0.1
            # still true after the float16 storage
            c16, y16 = clean.astype(np.float16).astype(np.float64), noisy.astype(np.float16).astype(np.float64)
            assert abs(B.snr_db(c16, y16 - c16) - snr) < 0.1


def test_no_clipping_after_gain_and_level():
    rng = np.random.default_rng(2)
    s = _speechlike(2 * SR, rng)
    s[1000] = 0.9  # a spike: crest factor high
    n = synth.synth_noise("white", 2 * SR, SR, rng)
    for snr in (-5.0, 20.0):
        for level in (-25.0, -3.0):
            noisy, clean, info = B.mix(s, n, snr, level, SR)
            assert np.max(np.abs(noisy)) <= 0.99 + 1e-9
            assert np.max(np.abs(clean)) <= 0.99 + 1e-9
            if info["limited_db"] == 0:  # level honoured exactly when no limiting was needed
                assert abs(info["speech_dbfs"] - level) < 0.05
    # a quiet level needs no limiting and is met
    noisy, clean, info = B.mix(s * 0.01, n, 10.0, -25.0, SR)
    assert info["limited_db"] == 0 and abs(info["speech_dbfs"] + 25) < 0.05


def test_noise_only_clip():
    rng = np.random.default_rng(3)
    n = synth.synth_noise("pink", SR, SR, rng)
    noisy, clean, info = B.mix(np.zeros(SR), n, None, -30.0, SR)
    assert np.all(clean == 0) and abs(20 * np.log10(B.rms(noisy)) + 30) < 0.05


def test_synth_noises_and_midi():
    rng = np.random.default_rng(4)
    for fam in synth.NOISE_FAMILIES:
        x = synth.synth_noise(fam, SR, SR, rng)
        assert x.shape == (SR,) and np.all(np.isfinite(x)) and B.rms(x) > 1e-3
    mid = synth.random_midi(24, 3.0, rng)
    assert mid[:4] == b"MThd" and b"MTrk" in mid and mid.endswith(b"\x00\xff\x2f\x00")
    h = synth.synthetic_rir(SR, 0.4, rng)
    assert h[0] == 1.0 and np.argmax(np.abs(h)) == 0


# ----------------------------------------------------------------------------- reserved data

@pytest.mark.parametrize("path", [
    "/usr/share/bucklespring/wav/01-0.wav",
    "/var/cache/apt/archives/fillets-ng-data-nl_1.0.1-1_all.deb",
    "/tmp/x/bucklespring-data/a.wav",
    "/usr/share/games/fillets-ng/sound/airplane/nl/let-m-divna.ogg",
])
def test_reserved_paths_refused(path):
    with pytest.raises(S.ReservedSourceError):
        S.check_allowed(path)
    with pytest.raises(S.ReservedSourceError):
        S.load_audio(path)


def test_allowed_paths_pass():
    for p in ("/usr/share/games/fillets-ng/sound/airplane/cs/let-m-divna.ogg", "/usr/share/ktuberling/sounds/nl/ball.ogg"):
        assert S.check_allowed(p) == p


def test_builder_refuses_reserved_catalogue_entry(tmp_path):
    cat = [S.Source(id="x", kind="speech", origin="test", licence="", speaker="a",
                    path="/usr/share/bucklespring/wav/x.wav", rate=SR, duration=1.0)]
    with pytest.raises(S.ReservedSourceError):
        B.build(tmp_path / "out", SR, 0.001, 0.001, 0, cache=tmp_path / "cache", catalogue=cat, jobs=1)
    with pytest.raises(S.ReservedSourceError):
        B.build(tmp_path / "bucklespring-data", SR, 0.001, 0.001, 0, cache=tmp_path / "c", catalogue=[], jobs=1)


# ----------------------------------------------------------------------------- split + determinism

def _catalogue(d: Path):
    rng = np.random.default_rng(0)
    cat = []
    for spk in range(6):
        for k in range(3):
            p = d / f"spk{spk}_{k}.wav"
            sf.write(p, _speechlike(int(1.5 * SR), rng, f0=100 + 25 * spk), SR)
            cat.append(S.Source(id=f"t:spk{spk}/{k}", kind="speech", origin="test", licence="", speaker=f"t:spk{spk}",
                                path=str(p), rate=SR, duration=1.5))
    for j, fam in enumerate(("white", "pink", "brown", "fan", "hum", "traffic")):
        p = d / f"noise_{fam}.wav"
        sf.write(p, synth.synth_noise(fam, 3 * SR, SR, rng), SR)
        cat.append(S.Source(id=f"t:noise/{fam}", kind="noise", origin="test-noise", licence="",
                            speaker=f"t:noise/{fam}", path=str(p), rate=SR, duration=3.0))
    return cat


def test_split_disjoint_by_speaker_and_noise(tmp_path):
    cat = _catalogue(tmp_path)
    sp = B.make_split(cat)
    tr, te = set(sp["groups"]["train"]), set(sp["groups"]["test"])
    assert tr and te and not tr & te
    for s in cat:
        assert sp["sources"][s.id] == ("test" if s.speaker in te else "train")
    # every stratum with >= 2 groups has one in test and one in train
    for kind in ("speech", "noise"):
        g = {s.speaker for s in cat if s.kind == kind}
        assert g & te and g & tr
    assert B.make_split(cat) == sp  # independent of anything but the catalogue


def _tiny_build(tmp_path, name, cat, seed, jobs):
    return B.build(tmp_path / name, SR, hours_train=12 / 3600, hours_test=5 / 3600, seed=seed,
                   cache=tmp_path / "cache", jobs=jobs, clip_seconds=1.0, catalogue=cat, n_rooms=(3, 2),
                   p_rir=0.5, shard_size=4, log=lambda m: None)


def test_build_deterministic_and_disjoint(tmp_path):
    cat = _catalogue(tmp_path)
    st = _tiny_build(tmp_path, "a", cat, 7, jobs=2)
    _tiny_build(tmp_path, "b", cat, 7, jobs=1)
    _tiny_build(tmp_path, "c", cat, 8, jobs=1)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert st["clips"] == {"train": 12, "test": 5}
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*.npy"))
    assert names and names == sorted(p.relative_to(b).as_posix() for p in b.rglob("*.npy"))
    for n in names:
        assert np.array_equal(np.load(a / n), np.load(b / n)), n
    assert (a / "manifest.jsonl").read_text() == (b / "manifest.jsonl").read_text()
    assert (a / "manifest.jsonl").read_text() != (c / "manifest.jsonl").read_text()
    rows = [json.loads(line) for line in (a / "manifest.jsonl").read_text().splitlines()]
    split = json.loads((a / "split.json").read_text())
    test_rows = [r for r in rows if r["split"] == "test"]
    assert sorted(r["snr_db"] for r in test_rows) == sorted(B.TEST_SNRS)
    for r in rows:
        ids = r["speech"] + [n for n in r["noise"] if n in split["sources"]] + (r["babble_speech"] or [])
        assert all(split["sources"][i] == r["split"] for i in ids)
        noisy = np.load(a / r["shard"])[r["row"]].astype(np.float64)
        clean = np.load(a / r["shard"].replace("noisy_", "clean_"))[r["row"]].astype(np.float64)
        assert np.max(np.abs(noisy)) < 0.991  # 0.99 limit, float16 rounding
        if r["snr_db"] is not None:
            assert abs(B.snr_db(clean, noisy - clean) - r["snr_db"]) < 0.1


def test_built_dataset_split_if_present():
    """The real data set, when built here: no speaker or noise source on both sides."""
    out = ROOT / "firmware_tools" / "work" / "denoise16k"
    if not (out / "manifest.jsonl").exists() or not (out / "split.json").exists():
        pytest.skip("firmware_tools/work/denoise16k not built")
    split = json.loads((out / "split.json").read_text())
    seen = {"train": set(), "test": set()}
    spk = {"train": set(), "test": set()}
    with open(out / "manifest.jsonl") as f:
        for line in f:
            r = json.loads(line)
            ids = r["speech"] + [n for n in r["noise"] if n in split["sources"]] + (r["babble_speech"] or [])
            seen[r["split"]].update(ids)
            spk[r["split"]].update([r["speaker"]] + (r["babble_speakers"] or []))
    assert not seen["train"] & seen["test"]
    assert not (spk["train"] - {None}) & (spk["test"] - {None})
    assert all(split["sources"][i] == "test" for i in seen["test"])


# ----------------------------------------------------------------------------- renderers (skip if absent)

@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_espeak_render(tmp_path):
    src = S.Source(id="espeak:en-us+f3/t", kind="speech", origin="render:espeak-ng", licence="", speaker="espeak:f3",
                   render={"tool": "espeak-ng", "voice": "en-us+f3", "text": "Hello there, this is a test.",
                           "speed": 160, "pitch": 50})
    sid, path, rate, dur = S.render_one((src, str(tmp_path)))
    assert path and rate == 22050 and 1.0 < dur < 5.0
    x, sr = S.load_audio(path)
    ok, why = S.looks_like_speech(S.vad_stats(x, sr))
    assert ok, why


@pytest.mark.parametrize("stem, code", [
    ("deu-p-trinken1", "p"), ("deu-l-tovarisci", "l"), ("war-a-ready0", "a"), ("dr-7-sm3", "7"),
    ("bar-x-gr1", None), ("bat-t-phone0", None), ("k1-chob-1", None), ("kan-klavir-music", None),
    ("laser", None), ("unlocking-1", None)])
def test_fillets_character_voices_are_not_noise(stem, code):
    # a voice in the noise pool would teach the denoiser to remove speech
    assert S.fillets_voice_code(stem) == code
