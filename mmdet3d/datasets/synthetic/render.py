"""Camera images by vectorised ray casting in the ego frame: sky, textured ground, and oriented boxes in their
class colour with Lambertian shading per face (vehicles get a darker window band and wheel band; every object a
light front end, the heading cue of ``raycast.in_front_end``)."""
import numpy as np

from .ground import HAZE_COLOUR, ground_colour
from .raycast import EDGES as _EDGES
from .raycast import FACE_NORMALS, box_corners, in_front_end, ray_box, ray_ground

SUN = np.array([0.35, -0.45, 0.82]) / np.linalg.norm([0.35, -0.45, 0.82])  # world frame, towards the sun
AMBIENT, DIFFUSE = 0.5, 0.55
SKY_ZENITH = np.array([112.0, 150.0, 212.0])
NOISE_STD = 2.0
PLAIN, VEHICLE, TRAILER = 0, 1, 2  # surface styles
NEAR = 0.1
FRONT_TINT, FRONT_MIX = 0.95, 0.45  # the front end: the class colour mixed towards white (keeps its hue)


class CameraRenderer:
    """Renders one camera of the rig. Pixel ``(i, j)`` is the ray through image point ``(u, v) = (j, i)`` (pixel
    centres at integer coordinates, as OpenCV and the devkit's projections); ``t`` along a ray is camera depth."""

    def __init__(self, camera, image_size):
        self.channel = camera.channel
        self.height, self.width = image_size
        k = camera.intrinsic
        self.k = k
        cam2ego = camera.matrix
        self.rot, self.origin = cam2ego[:3, :3], cam2ego[:3, 3]
        v, u = np.mgrid[0:self.height, 0:self.width].astype(np.float64)
        dirs_cam = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
        self.dirs = dirs_cam @ self.rot.T
        # The ego frame neither pitches nor rolls, so where each pixel meets the ground (in the ego frame) is fixed.
        self.t_ground = ray_ground(self.origin, self.dirs)
        ground = np.isfinite(self.t_ground)
        self.ground_idx = np.flatnonzero(ground)
        norm = np.linalg.norm(self.dirs[ground], axis=1)
        tg = self.t_ground[ground]
        self.ground_xy = self.origin[:2] + tg[:, None] * self.dirs[ground, :2]
        self.ground_distance = tg * norm
        self.ground_lateral_fp = self.ground_distance / k[0, 0]
        self.ground_fp = self.ground_lateral_fp * norm / np.abs(self.dirs[ground, 2])
        elevation = np.clip(self.dirs[:, 2] / np.linalg.norm(self.dirs, axis=1), 0, 1)[:, None] ** 0.6
        self.sky = HAZE_COLOUR * (1 - elevation) + SKY_ZENITH * elevation

    def _pixel_block(self, box):
        """Flat indices of the pixels the box can cover (the bounding rectangle of its projection, clipped at the
        near plane), or None."""
        cam = (box_corners(box) - self.origin) @ self.rot
        front = cam[:, 2] >= NEAR
        if not front.any():
            return None
        pts = [cam[front]]
        a, b = cam[_EDGES[:, 0]], cam[_EDGES[:, 1]]
        crossing = (a[:, 2] >= NEAR) != (b[:, 2] >= NEAR)
        if crossing.any():
            a, b = a[crossing], b[crossing]
            pts.append(a + (NEAR - a[:, 2:]) / (b[:, 2:] - a[:, 2:]) * (b - a))
        cam = np.concatenate(pts)
        uv = cam[:, :2] / cam[:, 2:] * self.k[[0, 1], [0, 1]] + self.k[[0, 1], [2, 2]]
        u0, v0 = np.maximum(np.floor(uv.min(0)).astype(int) - 1, 0)
        u1 = min(int(np.ceil(uv[:, 0].max())) + 1, self.width)
        v1 = min(int(np.ceil(uv[:, 1].max())) + 1, self.height)
        if u0 >= u1 or v0 >= v1:
            return None
        rows, cols = np.arange(v0, v1), np.arange(u0, u1)
        return (rows[:, None] * self.width + cols[None, :]).ravel()

    def render(self, boxes, colours, styles, ego_pose, road, salt, rng, with_owner=False):
        """Image ``[H, W, 3]`` uint8 of ego-frame boxes ``[N, 7]`` with RGB ``colours [N, 3]`` (0-1) and surface
        ``styles [N]``; also per box the pixels it would cover alone and the pixels where it is in front, and with
        ``with_owner`` the box each pixel shows ``[H, W]`` (-1: ground or sky)."""
        n = len(boxes)
        depth = self.t_ground.copy()
        owner = np.full(depth.shape, -1, dtype=np.int64)
        face = np.zeros(depth.shape, dtype=np.int64)
        silhouette = np.zeros(n, dtype=np.int64)
        for i, box in enumerate(boxes):
            idx = self._pixel_block(box)
            if idx is None:
                continue
            t, f = ray_box(self.origin, self.dirs[idx], box)
            silhouette[i] = np.isfinite(t).sum()
            closer = t < depth[idx]
            depth[idx[closer]], owner[idx[closer]], face[idx[closer]] = t[closer], i, f[closer]
        visible = np.bincount(owner[owner >= 0], minlength=n)

        image = self.sky.copy()
        c, s = np.cos(ego_pose[2]), np.sin(ego_pose[2])
        gxy = self.ground_xy @ np.array([[c, s], [-s, c]]) + ego_pose[:2]
        image[self.ground_idx] = ground_colour(gxy, road, salt, self.ground_fp, self.ground_lateral_fp,
                                               self.ground_distance)
        hit = np.flatnonzero(owner >= 0)
        if len(hit):
            obj = owner[hit]
            yaw = boxes[obj, 6] + ego_pose[2]
            normal = FACE_NORMALS[face[hit]]
            nx = np.cos(yaw) * normal[:, 0] - np.sin(yaw) * normal[:, 1]
            ny = np.sin(yaw) * normal[:, 0] + np.cos(yaw) * normal[:, 1]
            shade = AMBIENT + DIFFUSE * np.maximum(nx * SUN[0] + ny * SUN[1] + normal[:, 2] * SUN[2], 0)
            height = (self.origin[2] + depth[hit] * self.dirs[hit, 2] - (boxes[obj, 2] - boxes[obj, 5] / 2)) \
                / boxes[obj, 5]
            side = face[hit] < 4
            style = styles[obj]
            shade = np.where(side & (style == VEHICLE) & (height > 0.55) & (height < 0.9), shade * 0.45, shade)
            shade = np.where(side & (style != PLAIN) & (height < 0.18), shade * 0.5, shade)
            surface = self.origin + depth[hit, None] * self.dirs[hit]
            front = in_front_end(surface, boxes[obj])[:, None]
            colour = np.where(front, (1 - FRONT_MIX) * colours[obj] + FRONT_MIX * FRONT_TINT, colours[obj])
            image[hit] = colour * 255.0 * shade[:, None]
        image = image + NOISE_STD * rng.standard_normal(image.shape, dtype=np.float32)
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8).reshape(self.height, self.width, 3)
        if with_owner:
            return image, silhouette, visible, owner.reshape(self.height, self.width)
        return image, silhouette, visible
