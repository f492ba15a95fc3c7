import arrgen
import pytest
import torch

from soma_ray.model import sigreg
from soma_ray.model.sigreg_stat import characteristic_error, sigreg_per_token


@pytest.fixture(scope="module")
def noise():
    return torch.from_numpy(arrgen.normal_array(44, [1024, 256], 0.0, 1.0))


def test_known_answer_normal_input(noise):
    # spec/model.md: SIGReg of normal(43, [10, 10, 1024]) with noise normal(44, [1024, 256]).
    x = torch.from_numpy(arrgen.normal_array(43, [10, 10, 1024], 0.0, 1.0))
    assert sigreg(x, noise).item() == pytest.approx(1.28620601, abs=1e-5)


def test_known_answer_uniform_input(noise):
    x = torch.from_numpy(arrgen.uniform_array(43, [10, 10, 1024], 0.0, 1.0))
    assert sigreg(x, noise).item() == pytest.approx(29.08621025, abs=1e-4)


def test_per_token_statistic_is_per_token(noise):
    x = torch.from_numpy(arrgen.normal_array(43, [3, 5, 1024], 0.0, 1.0))
    per_token = sigreg_per_token(x, noise)
    assert per_token.shape == (3, 5)
    torch.testing.assert_close(sigreg_per_token(x[1, 2], noise), per_token[1, 2])
    # Scaling the noise does not change the directions.
    torch.testing.assert_close(sigreg_per_token(x, 3 * noise), per_token, rtol=1e-4, atol=1e-4)


def test_statistic_keeps_at_least_float32_and_the_callers_higher_precision():
    # Training under bf16 autocast hands bf16 projections: the statistic must not be rounded
    # to bf16; scoring hands float64 and gets float64 back.
    projections = torch.randn(32, 256, generator=torch.Generator().manual_seed(5))
    exact = characteristic_error(projections.double())
    from_bf16 = characteristic_error(projections.bfloat16())
    assert characteristic_error(projections).dtype == from_bf16.dtype == torch.float32
    assert exact.dtype == torch.float64
    torch.testing.assert_close(characteristic_error(projections).double(), exact,
                               rtol=1e-5, atol=1e-6)
    # bf16 inputs differ from float32 ones by their rounding, not by a bf16 result (3 digits).
    reference = characteristic_error(projections.bfloat16().double())
    torch.testing.assert_close(from_bf16.double(), reference, rtol=1e-5, atol=1e-6)
