"""Losses for the seg model: BCE plus soft Dice on masks (Dice counters the heavy class imbalance of
pixels: most are clean), plain BCE on the presence head."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="steel")
class BceDiceLoss(keras.losses.Loss):
    """``bounded BCE + leak * BCE + dice_weight * (1 - soft Dice)``, Dice per class over the whole batch.

    The bounded BCE clips the probabilities to [1e-6, 1 - 1e-6]: a pixel costs at most 13.8 nats, so
    the coarse polygon labels (clean steel inside a label, defect just outside it) cannot dominate
    the loss. But the clip also zeroes the gradient of every pixel whose logit is beyond +-13.8, and a
    class channel pushed that far down everywhere then stays dead: after synthetic pre-training, one of
    three out-of-fold fine-tunes of ``scripts/train_seg_real.sh`` kept every real class-4 probability
    at 0.00, on its own training frames too. The small unbounded term (``leak`` times Keras's BCE,
    which takes the logits from the sigmoid that made ``y_pred``) gives every pixel a gradient; where
    the bounded term gives none, Adam's per-weight scaling turns even a small one into full steps.
    Dropping the clip altogether measured worse on the real frames: fine-tuned from the same pre-trained
    model, out-of-fold 0.680 default / 0.690 tuned on the other folds, against 0.710-0.711 / 0.722-0.727
    with the clip.
    """

    def __init__(self, dice_weight: float = 1.0, smooth: float = 1.0, leak: float = 0.05, name: str = "bce_dice",
                 present_only: bool = False, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.dice_weight = dice_weight
        self.smooth = smooth
        self.leak = leak
        self.present_only = present_only  # fit.dice_classes=present: Dice over the classes labelled in the batch

    def call(self, y_true: Any, y_pred: Any) -> Any:
        bounded = ops.mean(keras.losses.binary_crossentropy(y_true, ops.clip(y_pred, 1e-6, 1.0 - 1e-6)))
        unbounded = ops.mean(keras.losses.binary_crossentropy(y_true, y_pred))
        axes = (0, 1, 2)
        inter = ops.sum(y_true * y_pred, axis=axes)
        total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
        dice = (2.0 * inter + self.smooth) / (total + self.smooth)
        if self.present_only:
            present = ops.cast(ops.sum(y_true, axis=axes) > 0, dice.dtype)
            dice_loss = ops.sum((1.0 - dice) * present) / ops.maximum(ops.sum(present), 1.0)
        else:
            dice_loss = ops.mean(1.0 - dice)
        return bounded + self.leak * unbounded + self.dice_weight * dice_loss

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dice_weight": self.dice_weight, "smooth": self.smooth, "leak": self.leak,
                "present_only": self.present_only}
