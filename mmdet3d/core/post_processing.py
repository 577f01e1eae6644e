"""CenterPoint post-processing: raw head outputs -> boxes, shared by ``CenterHead.get_bboxes`` and the ONNX runtime
evaluation (``mmdet3d.deploy``), so both score exactly the same decoding."""
import torch

from .nms import task_nms

__all__ = ["decode_center_outputs"]


@torch.no_grad()
def decode_center_outputs(preds, bbox_coder, nms_settings, label_offsets, score_threshold=None,
                          center_limit=None):
    """Detections per sample ``{boxes_3d [K, 9], scores_3d [K], labels_3d [K] int64}`` from ``preds``, one dict of
    ``[B, ch, X, Y]`` maps per task (heatmap logits). Per task: top-K decoding by ``bbox_coder``, then
    ``score_threshold``, then the task's NMS (``nms_settings[t]``: ``task_nms`` keywords); labels are shifted by
    ``label_offsets[t]`` to global ids; finally centres outside ``center_limit`` (6 values) are dropped."""
    per_sample = None
    for t, pred in enumerate(preds):
        rot = pred["rot"].float()
        detections = bbox_coder.decode(pred["heatmap"].float().sigmoid(), rot[:, 0:1], rot[:, 1:2],
                                       pred["height"].float(), pred["dim"].float(), pred["vel"].float(),
                                       pred["reg"].float())
        if per_sample is None:
            per_sample = [[] for _ in detections]
        for b, det in enumerate(detections):
            boxes, scores, labels = det["bboxes"], det["scores"], det["labels"]
            if score_threshold is not None:
                above = scores >= score_threshold
                boxes, scores, labels = boxes[above], scores[above], labels[above]
            keep = task_nms(boxes, scores, labels, **nms_settings[t])
            per_sample[b].append((boxes[keep], scores[keep], labels[keep] + label_offsets[t]))

    results = []
    for parts in per_sample:
        boxes, scores, labels = (torch.cat(items) for items in zip(*parts))
        if center_limit is not None:
            centers = boxes[:, :3]
            inside = ((centers >= centers.new_tensor(center_limit[:3]))
                      & (centers <= centers.new_tensor(center_limit[3:]))).all(1)
            boxes, scores, labels = boxes[inside], scores[inside], labels[inside]
        results.append({"boxes_3d": boxes, "scores_3d": scores, "labels_3d": labels.long()})
    return results
