import arrgen
import pytest
import torch

from soma_ray.model import sigreg
from soma_ray.model.sigreg_stat import sigreg_per_token


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
