"""A 32-beam spinning LiDAR (elevations of the Velodyne HDL-32E on nuScenes' LIDAR_TOP) by ray casting against the
ground and the boxes (an object's front end reflects more: ``raycast.in_front_end``). Points are returned in the
LIDAR_TOP frame as nuScenes stores them: x, y, z, intensity, ring."""
import numpy as np

from .ground import ground_reflectivity
from .raycast import FACE_NORMALS, FRONT_REFLECTIVITY_GAIN, box_corners, in_front_end, ray_box, ray_ground

ELEVATIONS_DEG = np.linspace(-30.67, 10.67, 32)
MAX_RANGE, MIN_RANGE = 70.0, 1.0
RANGE_NOISE = 0.01       # m, Gaussian, truncated at two sigma
INSIDE_MARGIN = 0.005    # m, surface hits are pulled this far inside their box so rounding cannot put them outside


class LidarRenderer:
    def __init__(self, lidar, azimuth_step_deg=0.5):
        self.azimuths = np.deg2rad(np.arange(0.0, 360.0, azimuth_step_deg))
        self.step = np.deg2rad(azimuth_step_deg)
        el = np.deg2rad(ELEVATIONS_DEG)[:, None]
        az = self.azimuths[None, :]
        dirs = np.stack(np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)), -1)
        self.rings = np.broadcast_to(np.arange(len(el))[:, None], dirs.shape[:2]).ravel().astype(np.float64)
        self.dirs_lidar = dirs.reshape(-1, 3)
        m = lidar.matrix
        self.rot, self.origin = m[:3, :3], m[:3, 3]
        self.dirs = self.dirs_lidar @ self.rot.T
        self.t_ground = ray_ground(self.origin, self.dirs)

    def _rays_towards(self, box):
        """Indices of the rays whose azimuth lies within the box's angular extent (plus a column either side)."""
        local = (box_corners(box) - self.origin) @ self.rot
        centre = (box[:3] - self.origin) @ self.rot
        a_c = np.arctan2(centre[1], centre[0])
        delta = np.mod(np.arctan2(local[:, 1], local[:, 0]) - a_c + np.pi, 2 * np.pi) - np.pi
        lo = int(np.floor((a_c + delta.min()) / self.step)) - 1
        hi = int(np.ceil((a_c + delta.max()) / self.step)) + 1
        cols = np.arange(lo, hi + 1) % len(self.azimuths)
        return (np.arange(len(ELEVATIONS_DEG))[:, None] * len(self.azimuths) + cols[None, :]).ravel()

    def scan(self, boxes, reflectivity, ego_pose, road, salt, rng):
        """Points ``[P, 5]`` float32 in the LIDAR_TOP frame for ego-frame boxes ``[N, 7]`` with LiDAR
        ``reflectivity [N]``."""
        t = self.t_ground.copy()
        owner = np.full(t.shape, -1, dtype=np.int64)
        face = np.zeros(t.shape, dtype=np.int64)
        for i, box in enumerate(boxes):
            idx = self._rays_towards(box)
            tb, fb = ray_box(self.origin, self.dirs[idx], box)
            closer = tb < t[idx]
            t[idx[closer]], owner[idx[closer]], face[idx[closer]] = tb[closer], i, fb[closer]
        keep = np.flatnonzero((t >= MIN_RANGE) & (t <= MAX_RANGE))
        t, owner, face = t[keep], owner[keep], face[keep]
        dirs = self.dirs[keep]
        noisy = t + np.clip(rng.normal(0.0, RANGE_NOISE, len(t)), -2 * RANGE_NOISE, 2 * RANGE_NOISE)
        points = self.origin + noisy[:, None] * dirs

        on_box = np.flatnonzero(owner >= 0)
        cos_incidence = np.abs(dirs[:, 2])  # ground normal is +z
        intensity = np.zeros(len(t))
        ground = np.flatnonzero(owner < 0)
        c, s = np.cos(ego_pose[2]), np.sin(ego_pose[2])
        gxy = points[ground, :2] @ np.array([[c, s], [-s, c]]) + ego_pose[:2]
        intensity[ground] = ground_reflectivity(gxy, road, salt)
        if len(on_box):
            b = boxes[owner[on_box]]
            cb, sb = np.cos(b[:, 6]), np.sin(b[:, 6])
            rel = points[on_box] - b[:, :3]
            local = np.stack([cb * rel[:, 0] + sb * rel[:, 1], -sb * rel[:, 0] + cb * rel[:, 1], rel[:, 2]], -1)
            half = b[:, 3:6] / 2 - INSIDE_MARGIN
            local = np.clip(local, -half, half)
            points[on_box] = np.stack([cb * local[:, 0] - sb * local[:, 1], sb * local[:, 0] + cb * local[:, 1],
                                       local[:, 2]], -1) + b[:, :3]
            normal = FACE_NORMALS[face[on_box]]
            dl = np.stack([cb * dirs[on_box, 0] + sb * dirs[on_box, 1], -sb * dirs[on_box, 0] + cb * dirs[on_box, 1],
                           dirs[on_box, 2]], -1)
            cos_incidence[on_box] = np.abs((normal * dl).sum(1))
            gain = np.where(in_front_end(points[on_box], b), FRONT_REFLECTIVITY_GAIN, 1.0)
            intensity[on_box] = reflectivity[owner[on_box]] * gain
        intensity = intensity * (0.3 + 0.7 * cos_incidence) * rng.uniform(0.9, 1.1, len(t))
        xyz = (points - self.origin) @ self.rot
        out = np.column_stack([xyz, np.clip(np.rint(intensity), 0, 255), self.rings[keep]]).astype(np.float32)
        return out
