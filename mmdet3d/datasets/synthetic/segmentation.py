"""Camera images with per-pixel class labels from the generated world, for 2D-only backbone pretraining (the
analogue of the nuImages pretraining of the original's Swin-T). Scenes are drawn from their own random stream, so
they are never the scenes of a generated dataset; no depth or 3D label is produced."""
import numpy as np

from .catalogue import DETECTION_CLASSES, OBJECT_CLASSES
from .generate import _style
from .raycast import world_to_ego_boxes
from .render import CameraRenderer
from .rig import build_rig
from .scene import sample_layout

# Label 0 is ground and sky, 1..10 the detection classes in their order, then the other object kinds.
SEGMENTATION_CLASSES = ("background",) + DETECTION_CLASSES + tuple(n for n in OBJECT_CLASSES
                                                                   if n not in DETECTION_CLASSES)
SEED_STREAM = 7  # keeps these layouts apart from the dataset generator's streams


def segmentation_frames(seed, scenes, frames_per_scene, image_size):
    """Yields ``(images [6, H, W, 3] uint8, labels [6, H, W] int64)`` per key frame of ``scenes`` random scenes."""
    _, cameras = build_rig(image_size)
    renderers = [CameraRenderer(cam, image_size) for cam in cameras]
    label_of = {n: SEGMENTATION_CLASSES.index(n) for n in OBJECT_CLASSES}
    for scene in range(scenes):
        rng = np.random.default_rng([seed, SEED_STREAM, scene])
        layout = sample_layout(rng, frames_per_scene, 0)
        labels_of_objects = np.array([label_of[n] for n in layout.names] + [0], dtype=np.int64)
        colours = np.array(layout.colours).reshape(-1, 3)
        styles = np.array([_style(n) for n in layout.names], dtype=np.int64)
        salt = int(rng.integers(1 << 31))
        for t in layout.key_frames:
            boxes = world_to_ego_boxes(layout.boxes(t), layout.ego[t])
            images, labels = [], []
            for renderer in renderers:
                image, _, _, owner = renderer.render(boxes, colours, styles, layout.ego[t], layout.road, salt, rng,
                                                     with_owner=True)
                images.append(image)
                labels.append(labels_of_objects[owner])  # owner -1 picks the trailing 0
            yield np.stack(images), np.stack(labels)
