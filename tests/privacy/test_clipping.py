import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from privacy.clipping import clip_to_norm


@given(arrays(np.float64, st.integers(1, 50), elements=st.floats(-1e6, 1e6)), st.floats(1e-3, 1e3))
def test_clipped_norm_never_exceeds_bound_and_direction_is_kept(values: np.ndarray, bound: float) -> None:
    clipped = clip_to_norm(values, bound)

    assert np.linalg.norm(clipped.values) <= bound * (1 + 1e-9)
    assert clipped.norm == pytest.approx(np.linalg.norm(values))
    np.testing.assert_allclose(clipped.values, values * clipped.scale)


def test_within_bound_is_unchanged() -> None:
    clipped = clip_to_norm([0.3, 0.4], 1.0)

    assert clipped.scale == 1.0
    np.testing.assert_array_equal(clipped.values, [0.3, 0.4])


@pytest.mark.parametrize("bad", [[np.nan], [np.inf]])
def test_non_finite_update_is_refused(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="not finite"):
        clip_to_norm(bad, 1.0)


def test_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        clip_to_norm([1.0], 0.0)
