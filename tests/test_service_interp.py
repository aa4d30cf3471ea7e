"""service/interp.py: the collector and the GIL hand-over kept out of the audio threads' way."""
import gc
import sys

from edge_runtime.service.interp import SWITCH_INTERVAL_S, GcGuard


def test_guard_freezes_times_collections_and_restores_the_interpreter():
    before = sys.getswitchinterval()
    g = GcGuard().install()
    try:
        assert sys.getswitchinterval() == SWITCH_INTERVAL_S
        gc.collect(2)                         # a start-up collection: not what the audio lived with
        assert g.snapshot()["collections"][2] == 1
        g.settle()
        assert gc.get_freeze_count() > 1000 and g.freezes == 1 and not g.dirty
        assert g.snapshot()["collections"][2] == 0      # zeroed; settle's own collection is not counted
        gc.collect(0)
        gc.collect(2)
        snap = g.snapshot()
        assert snap["collections"][0] >= 1 and snap["collections"][2] >= 1
        assert snap["max_ms"][2] >= 0.0 and snap["frozen_objects"] == gc.get_freeze_count()
        g.unfreeze()                          # a reload: old pipelines can be collected again
        assert gc.get_freeze_count() == 0 and g.dirty
        g.settle()
        assert g.freezes == 2 and not g.dirty
    finally:
        g.uninstall()
    assert sys.getswitchinterval() == before and gc.get_freeze_count() == 0
    assert g._cb not in gc.callbacks


def test_a_cycle_made_before_the_freeze_is_collected_after_unfreeze():
    import weakref

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a                    # a reference cycle, as a replaced pipeline may leave
    ref = weakref.ref(a)
    g = GcGuard(switch_interval_s=None).install()
    try:
        g.settle()
        del a, b
        gc.collect()
        assert ref() is not None               # frozen: the collector leaves it alone
        g.unfreeze()
        gc.collect()
        assert ref() is None
    finally:
        g.uninstall()
