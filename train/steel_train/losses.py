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
        y_pred = ops.clip(y_pred, 1e-6, 1.0 - 1e-6)
        bce = ops.mean(keras.losses.binary_crossentropy(y_true, y_pred))
        axes = (0, 1, 2)
        inter = ops.sum(y_true * y_pred, axis=axes)
        total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
        dice = (2.0 * inter + self.smooth) / (total + self.smooth)
        return bce + self.dice_weight * (1.0 - ops.mean(dice))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dice_weight": self.dice_weight, "smooth": self.smooth}
