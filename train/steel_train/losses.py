"""Losses for the seg model: BCE plus soft Dice on masks (Dice counters the heavy class imbalance of
pixels: most are clean), plain BCE on the presence head."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="steel")
class BceDiceLoss(keras.losses.Loss):
    """``bce + dice_weight * (1 - soft Dice)``, Dice computed per class over the whole batch."""

    def __init__(self, dice_weight: float = 1.0, smooth: float = 1.0, name: str = "bce_dice", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.dice_weight = dice_weight
        self.smooth = smooth

    def call(self, y_true: Any, y_pred: Any) -> Any:
        # No clipping here: Keras's BCE takes the logits from the sigmoid that made y_pred, so a pixel
        # the model is sure of still gets a gradient. Clipping y_pred (as this loss once did at 1e-6)
        # zeroes the gradient of every pixel whose logit is below -13.8: a class channel pushed that
        # far down everywhere, e.g. by synthetic pre-training that never shows real class-4 patches,
        # then stays dead through fine-tuning (measured: one of three out-of-fold models kept every
        # real class-4 probability at 0.00, on its own training frames too).
        bce = ops.mean(keras.losses.binary_crossentropy(y_true, y_pred))
        axes = (0, 1, 2)
        inter = ops.sum(y_true * y_pred, axis=axes)
        total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
        dice = (2.0 * inter + self.smooth) / (total + self.smooth)
        return bce + self.dice_weight * (1.0 - ops.mean(dice))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dice_weight": self.dice_weight, "smooth": self.smooth}
