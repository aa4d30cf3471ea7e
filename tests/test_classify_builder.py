"""The sound-classifier data builder's split (firmware_tools/data/build_classify.py): units never
cross splits, and sources added in a later builder version (split group "v6") are split among
themselves, so the earlier units keep their splits and models of both builders meet the same
TEST units."""
import sys

import pytest

from conftest import ROOT

pytest.importorskip("scipy")
pytest.importorskip("soundfile")
sys.path.insert(0, str(ROOT / "firmware_tools" / "data"))
import build_classify as B  # noqa: E402


def _items(n, cls, prefix, group=""):
    return [B.Item(cls, f"{prefix}:{i}", f"deb:{prefix}", f"/nonexistent/{prefix}/{i}.wav", group=group)
            for i in range(n)]


def _unit_split(split):
    return {it.unit: name for name, its in split.items() for it in its if not it.synth}


def test_units_never_cross_splits_and_quotas_hold():
    items = _items(40, "alarm", "theme") + _items(12, "music", "score")
    split = B.split_items(items)
    seen = {}
    for name, its in split.items():
        for it in its:
            assert seen.setdefault(it.unit, name) == name, f"{it.unit} in {seen[it.unit]} and {name}"
    by = _unit_split(split)
    alarm = [s for u, s in by.items() if u.startswith("theme:")]
    assert alarm.count("test") == 10 and alarm.count("val") == 6 and alarm.count("train") == 24


def test_a_new_group_leaves_earlier_units_where_they_were():
    v5 = _items(40, "alarm", "theme") + _items(30, "music", "score") + _items(5, "speech", "voice")
    v6 = _items(27, "alarm", "messenger", "v6") + _items(67, "music", "stk", "v6") + \
        _items(1, "speech", "phone", "v6")
    before = _unit_split(B.split_items(v5))
    after = _unit_split(B.split_items(v5 + v6))
    assert {u: after[u] for u in before} == before
    new = {u: s for u, s in after.items() if u not in before}
    assert sum(s == "test" for u, s in new.items() if u.startswith("messenger:")) == 7
    assert sum(s == "test" for u, s in new.items() if u.startswith("stk:")) == 17
    assert new["phone:0"] == "train"        # a group with fewer than 3 units of a class only trains


def test_synthetic_generators_are_in_every_split():
    items = _items(8, "alarm", "theme") + [B.Item("alarm", "synth:alarm/smoke", "synth:alarm", synth="alarm:smoke")]
    split = B.split_items(items)
    for name in ("train", "val", "test"):
        assert any(it.synth == "alarm:smoke" for it in split[name])


@pytest.mark.parametrize("pkg,stems,same", [
    ("wesnoth-1.16-music", ("frantic", "frantic-old"), True),
    ("wesnoth-1.16-music", ("victory", "victory2"), True),
    ("wesnoth-1.16-music", ("victory", "defeat"), False),
    ("warzone2100-music", ("track3", "track3_enhanced"), True),
    ("warzone2100-music", ("track3", "track13"), False),
    ("baresip-core", ("sound1", "soundstar"), True),
    ("baresip-core", ("ring", "ringback"), False),
])
def test_versions_of_one_piece_share_a_unit(pkg, stems, same):
    a, b = (B._v7_unit(pkg, s) for s in stems)
    assert (a == b) is same
