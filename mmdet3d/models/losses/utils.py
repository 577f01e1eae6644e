"""Reduction shared by the element-wise losses (mmdet's ``weight_reduce_loss`` semantics)."""

__all__ = ["REDUCTIONS", "weight_reduce_loss"]

REDUCTIONS = ("none", "mean", "sum")


def weight_reduce_loss(loss, weight=None, reduction="mean", avg_factor=None):
    """Multiplies the element-wise ``loss`` by ``weight`` and reduces it.

    ``'mean'`` divides the sum by ``avg_factor`` when given (e.g. the number of objects), else by the element count.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if weight is not None:
        loss = loss * weight
    if reduction == "none":
        return loss
    if reduction == "sum":
        if avg_factor is not None:
            raise ValueError("avg_factor only applies to reduction='mean'")
        return loss.sum()
    return loss.mean() if avg_factor is None else loss.sum() / avg_factor
