import pytest

from workers.seal.gate import decide


def test_accepts_rise_within_margins():
    d = decide(new_before=0.25, new_after=0.75, old_before=0.8, old_after=0.75, canary_before=0.9,
               canary_after=0.9, old_margin=0.1, canary_margin=0.05)
    assert d.accepted
    assert d.numbers["new_gain"] == pytest.approx(0.5)
    assert d.numbers["old_drop"] == pytest.approx(0.05)


def test_rejects_when_new_facts_do_not_rise():
    d = decide(new_before=0.5, new_after=0.5)
    assert not d.accepted
    assert "did not rise" in d.reasons[0]


def test_unchanged_at_perfect_is_accepted():
    assert decide(new_before=1.0, new_after=1.0).accepted
    assert not decide(new_before=1.0, new_after=0.75).accepted


def test_rejects_old_probe_drop_beyond_margin():
    d = decide(new_before=0.0, new_after=1.0, old_before=1.0, old_after=0.5, old_margin=0.1)
    assert not d.accepted
    assert any("old-probe" in r for r in d.reasons)


def test_drop_exactly_at_margin_passes():
    d = decide(new_before=0.0, new_after=1.0, old_before=0.3, old_after=0.2, old_margin=0.1,
               canary_before=0.7, canary_after=0.65, canary_margin=0.05)
    assert d.accepted, d.reasons


def test_rejects_canary_drop_and_lists_all_reasons():
    d = decide(new_before=0.5, new_after=0.25, canary_before=0.9, canary_after=0.5, canary_margin=0.05)
    assert not d.accepted
    assert len(d.reasons) == 2


@pytest.mark.parametrize("kwargs", [
    {"new_before": 1.5, "new_after": 0.5},
    {"new_before": 0.0, "new_after": 1.0, "old_before": 0.5},
    {"new_before": 0.0, "new_after": 1.0, "old_margin": -0.1},
])
def test_bad_inputs_raise(kwargs):
    with pytest.raises(ValueError):
        decide(**kwargs)
