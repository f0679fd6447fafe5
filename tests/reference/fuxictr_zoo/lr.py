"""lr: FuxiCTR 2.3.10 composition following model_zoo/LR/src/LR.py, and the transplant of our weights into it."""

from __future__ import annotations

from fuxictr.pytorch.layers import LogisticRegression
from fuxictr_reference import Reference, RefModel, copy_lr


class LR(RefModel):  # model_zoo/LR/src/LR.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.lr_layer = LogisticRegression(fmap, use_bias=True)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        return {"y_pred": self.output_activation(self.lr_layer(X))}


def transplant_lr(ours, theirs):
    copy_lr(theirs.lr_layer, ours.lr, "lr")


REFERENCE = Reference(LR, transplant_lr, {"lr": {}}, "model_zoo/LR/src/LR.py")
