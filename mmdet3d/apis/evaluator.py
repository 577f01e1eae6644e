"""Evaluation across processes: results gathered to rank 0 in dataset order, metrics computed there only."""
import warnings

from mmengine.evaluator import Evaluator
from mmengine.registry import EVALUATOR

from .distributed import broadcast_from_rank0, gather_to_rank0_in_order, get_rank


@EVALUATOR.register_module()
class RankZeroEvaluator(Evaluator):
    """mmengine ``Evaluator`` whose ``evaluate`` gathers each metric's per-sample results to rank 0 with
    ``torch.distributed`` (any backend; no shared temp folder), in dataset order (unshuffled ``DefaultSampler``,
    one result per sample), runs ``compute_metrics`` on rank 0 only and broadcasts the numbers to every rank."""

    def evaluate(self, size):
        metrics = {}
        for metric in self.metrics:
            results = gather_to_rank0_in_order(metric.results, size)
            values = None
            if get_rank() == 0:
                if len(results) != size:
                    warnings.warn(f"{type(metric).__name__}: {len(results)} results for {size} samples")
                values = metric.compute_metrics(results)
                if metric.prefix:
                    values = {f"{metric.prefix}/{k}": v for k, v in values.items()}
            values = broadcast_from_rank0(values)
            metric.results.clear()
            duplicated = sorted(set(values) & set(metrics))
            if duplicated:
                raise ValueError(f"two metrics report the same names: {duplicated}")
            metrics.update(values)
        return metrics
