"""The seg loss: bounded BCE + soft Dice on masks, and still a gradient for pixels the model is sure of."""

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

    The bounded BCE alone (probabilities clipped at 1e-6) has no gradient below logit -13.8, and a class
    channel that synthetic pre-training had pushed that far down stayed dead through fine-tuning.
    """
    value, grad = _loss_and_bias_grad(-40.0, 1.0)
    # bounded BCE 13.8 nats + 0.05 x 40 nats unbounded + 2 x (1 - Dice ~ 0)
    assert value == pytest.approx(13.8155 + 0.05 * 40 + 2.0, rel=1e-3)
    # Only the unbounded term has a gradient here: leak x mean(p - y) over the 4 classes' pixels.
    assert grad == pytest.approx([-0.05 / 4] * 4, rel=1e-3)  # gradient descent raises the bias


def test_loss_matches_bce_plus_dice() -> None:
    """Unsaturated: (1 + leak) * mean BCE + dice_weight * (1 - soft Dice per class over the batch, averaged)."""
    p, y = 1 / (1 + np.exp(-0.3)), 1.0
    value, _ = _loss_and_bias_grad(0.3, y)
    n = 2 * 8 * 8
    bce = -np.log(p)
    dice = (2 * n * p + 1) / (n + n * p + 1)
    assert value == pytest.approx(1.05 * bce + 2.0 * (1 - dice), rel=1e-4)
