"""The seg loss: BCE + soft Dice on masks, and a gradient for pixels the model is sure of."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tf


def _masks_model(bias: float):  # type: ignore[no-untyped-def]
    import keras

    image = keras.Input((8, 8, 1))
    masks = keras.layers.Conv2D(4, 1, activation="sigmoid", name="masks", kernel_initializer="zeros",
                                bias_initializer=keras.initializers.Constant(bias))(image)
    return keras.Model(image, {"masks": masks})


def _loss_and_bias_grad(bias: float, target: float) -> tuple[float, np.ndarray]:
    import tensorflow as tf

    from steel_train.losses import BceDiceLoss

    model, loss = _masks_model(bias), BceDiceLoss(dice_weight=2.0)
    x = np.ones((2, 8, 8, 1), np.float32)
    y = np.full((2, 8, 8, 4), target, np.float32)

    @tf.function  # as in model.fit: a traced step
    def step():
        with tf.GradientTape() as tape:
            value = loss(y, model(x)["masks"])
        return value, tape.gradient(value, model.get_layer("masks").bias)

    value, grad = step()
    return float(value), grad.numpy()


def test_saturated_class_channel_still_learns() -> None:
    """A channel at logit -40 (p ~ 4e-18) on pixels that are defect must be pulled up.

    Clipping the probabilities before the BCE once zeroed this gradient below logit -13.8, and a
    class channel that synthetic pre-training had pushed that far down stayed dead through fine-tuning.
    """
    value, grad = _loss_and_bias_grad(-40.0, 1.0)
    assert np.isfinite(value) and value > 30  # BCE ~ 40 nats per pixel plus the Dice term
    # d(mean BCE)/d(bias) = mean(p - y) over the 4 classes' pixels: -1/4 per class
    assert grad == pytest.approx([-0.25] * 4, abs=1e-3)  # gradient descent raises the bias


def test_loss_matches_bce_plus_dice() -> None:
    """Unsaturated: mean BCE + dice_weight * (1 - soft Dice per class over the batch, averaged)."""
    p, y = 1 / (1 + np.exp(-0.3)), 1.0
    value, _ = _loss_and_bias_grad(0.3, y)
    n = 2 * 8 * 8
    bce = -np.log(p)
    dice = (2 * n * p + 1) / (n + n * p + 1)
    assert value == pytest.approx(bce + 2.0 * (1 - dice), rel=1e-4)
