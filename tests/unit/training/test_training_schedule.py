import math

import pytest

from soma_ray.training.schedule import learning_rate


def lr(step, warmup=4, total=20):
    return learning_rate(step, peak=1e-3, warmup_steps=warmup, total_steps=total, min_ratio=0.1)


def test_warmup_rises_linearly_and_starts_above_zero():
    assert [lr(s) for s in range(4)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])


def test_cosine_decays_monotonically_to_the_floor_at_the_last_step():
    decay = [lr(s) for s in range(4, 20)]
    assert decay[0] == pytest.approx(1e-3) and decay[-1] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    # halfway through the decay the cosine is at the midpoint of peak and floor
    middle = learning_rate(5, peak=1.0, warmup_steps=0, total_steps=11, min_ratio=0.0)
    assert middle == pytest.approx(0.5)


def test_steps_past_the_end_stay_at_the_floor():
    assert lr(25) == pytest.approx(1e-4)


def test_no_warmup_and_single_step_run_use_the_peak():
    assert learning_rate(0, peak=0.1, warmup_steps=0, total_steps=1, min_ratio=0.1) == 0.1
    assert math.isclose(lr(0, warmup=0), 1e-3)
