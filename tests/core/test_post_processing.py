"""``decode_center_outputs``, the post-processing ``CenterHead.get_bboxes`` and the ONNX evaluation share, against
the decoding recomputed here step by step from the coder and the NMS front-end."""
import torch

from helpers.fake_batch import tiny_config
from mmdet3d.core.nms import task_nms
from mmdet3d.core.post_processing import decode_center_outputs
from mmdet3d.registry import MODELS


def head_and_outputs(seed=0):
    import mmdet3d.models  # noqa: F401  (registers the heads)

    head = MODELS.build(tiny_config("camera_lss.yaml").model.heads.object.to_dict()).eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        preds = head(torch.randn(2, head.shared_conv.conv.in_channels, 20, 20))
    for task in preds:
        task["heatmap"] = task["heatmap"] * 3  # spread the scores so thresholds and NMS both act
    return head, preds


def expected_detections(head, preds):
    cfg = head.test_cfg
    per_sample = [([], [], []) for _ in range(preds[0]["heatmap"].shape[0])]
    for t, pred in enumerate(preds):
        decoded = head.bbox_coder.decode(pred["heatmap"].sigmoid(), pred["rot"][:, :1], pred["rot"][:, 1:],
                                         pred["height"], pred["dim"], pred["vel"], pred["reg"])
        for b, det in enumerate(decoded):
            keep = det["scores"] >= cfg["score_threshold"]
            boxes, scores, labels = det["bboxes"][keep], det["scores"][keep], det["labels"][keep]
            kept = task_nms(boxes, scores, labels, **head.nms_settings[t])
            per_sample[b][0].append(boxes[kept])
            per_sample[b][1].append(scores[kept])
            per_sample[b][2].append(labels[kept] + head.label_offsets[t])
    out = []
    limit = torch.tensor(cfg["post_center_limit_range"])
    for boxes, scores, labels in per_sample:
        boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
        inside = ((boxes[:, :3] >= limit[:3]) & (boxes[:, :3] <= limit[3:])).all(1)
        out.append((boxes[inside], scores[inside], labels[inside]))
    return out


def test_get_bboxes_and_the_shared_function_equal_the_step_by_step_decoding():
    head, preds = head_and_outputs()
    expected = expected_detections(head, preds)
    shared = decode_center_outputs(preds, head.bbox_coder, head.nms_settings, head.label_offsets,
                                   head.test_cfg["score_threshold"], head.test_cfg["post_center_limit_range"])
    assert sum(len(boxes) for boxes, _, _ in expected) > 10
    for results in (head.get_bboxes(preds), shared):
        for result, (boxes, scores, labels) in zip(results, expected):
            torch.testing.assert_close(result["boxes_3d"], boxes, rtol=0, atol=0)
            torch.testing.assert_close(result["scores_3d"], scores, rtol=0, atol=0)
            assert torch.equal(result["labels_3d"], labels.long())
