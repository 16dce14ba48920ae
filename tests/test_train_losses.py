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


def test_dice_over_present_classes_leaves_an_absent_class_to_bce() -> None:
    """fit.dice_classes=present: a class with no labelled pixel in the batch adds nothing to the Dice term, so a
    rare class is not pushed to zero in every batch that lacks it; with all classes it is."""
    import keras

    from steel_train.losses import BceDiceLoss

    y = np.zeros((2, 8, 8, 4), np.float32)
    y[:, 2:6, 2:6, 0] = 1.0  # class 0 labelled, classes 1-3 absent from the batch
    pred = np.full((2, 8, 8, 4), 0.3, np.float32)
    pred[..., 0] = y[..., 0]  # class 0 predicted exactly
    bce_only = BceDiceLoss(dice_weight=0.0)(y, pred)
    present = BceDiceLoss(dice_weight=1.0, present_only=True)(y, pred)
    every = BceDiceLoss(dice_weight=1.0)(y, pred)
    # class 0 is perfect, so the present-only Dice term is (1 - (2*32+1)/(64+1)) = 0
    assert float(present) == pytest.approx(float(bce_only), abs=1e-5)
    # all classes: each absent one scores 1/(1 + 0.3*128), a Dice loss of about 0.97 for three of four classes
    assert float(every) - float(bce_only) == pytest.approx(0.75 * (1 - 1 / (1 + 0.3 * 128)), abs=1e-3)
    restored = BceDiceLoss.from_config(BceDiceLoss(present_only=True).get_config())
    assert restored.present_only
    assert keras.saving.get_registered_object("steel>BceDiceLoss") is BceDiceLoss
