"""The head: a hidden layer or, with units 0, UnivFD's linear probe."""

import keras
import numpy as np
import pytest

from conftest import compose_params
from pipeline.core.errors import ConfigError
from pipeline.models.head import build_head, head_logits


def test_dense_head_has_a_hidden_layer():
    head = build_head(8, units=4, dropout=0.1)
    assert [layer.units for layer in head.layers if isinstance(layer, keras.layers.Dense)] == [4, 1]


def test_units_zero_is_one_logistic_layer():
    """Its logit is exactly w.x + b: the linear probe, nothing hidden."""
    head = build_head(8, units=0, dropout=0.0)
    dense = [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)]
    assert len(dense) == 1 and head.count_params() == 8 + 1
    features = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    kernel, bias = dense[0].get_weights()
    expected = features @ kernel[:, 0] + bias[0]
    np.testing.assert_allclose(head_logits(head, features), expected, rtol=1e-5, atol=1e-6)


def test_linear_config_composes_to_units_zero():
    params = compose_params("head=linear")
    assert params["head"]["units"] == 0
    assert build_head(16, **params["head"]).count_params() == 17


@pytest.mark.parametrize("units", [-1, 2.5, "8", True])
def test_bad_units_are_refused(units):
    with pytest.raises(ConfigError, match="head.units"):
        build_head(8, units=units, dropout=0.0)
