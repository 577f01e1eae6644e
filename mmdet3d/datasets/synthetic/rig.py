"""The sensor rig: nuScenes' six cameras and LIDAR_TOP, calibrated as on the real car (the values of the key frame in
``tests/data/sample.json``), with the camera intrinsics rescaled to the rendered image size."""
from dataclasses import dataclass

import numpy as np
from pyquaternion import Quaternion

CAMERA_NAMES = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
REAL_IMAGE_SIZE = (900, 1600)  # (H, W) the intrinsics below belong to

# sensor -> ego: (rotation quaternion w, x, y, z), (translation); cameras also (fx, fy, cx, cy) at 1600x900.
# The LiDAR keeps the real mounting position and heading (x right, y forward) but not the real 1.4 degree tilt: the
# package's boxes only yaw in the LiDAR frame, and a level LiDAR keeps them exact here (ground truth scores 1.000).
LIDAR_YAW = -1.568763018  # rad, atan2 of the real lidar2ego's first column
LIDAR_TO_EGO = ((float(np.cos(LIDAR_YAW / 2)), 0.0, 0.0, float(np.sin(LIDAR_YAW / 2))),
                (0.9437130094, 0.0, 1.840229988))
CAMERA_CALIBRATION = {
    "CAM_FRONT": ((0.4998015431, -0.5030316163, 0.4997798114, -0.4973708382),
                  (1.70079124, 0.01594563201, 1.510957599),
                  (1266.417203, 1266.417203, 816.2670197, 491.5070658)),
    "CAM_FRONT_RIGHT": ((0.2060347929, -0.202694054, 0.6824507837, -0.6713610894),
                        (1.550847769, -0.4934048057, 1.495748043),
                        (1260.847445, 1260.847445, 807.9682445, 495.3344269)),
    "CAM_FRONT_LEFT": ((0.675726504, -0.6736266528, 0.2121401486, -0.2112282692),
                       (1.523877978, 0.49463135, 1.509328246),
                       (1272.597947, 1272.597947, 826.6154927, 479.7516539)),
    "CAM_BACK": ((0.5037872666, -0.497402498, -0.4941850225, 0.5045496097),
                 (0.02832603082, 0.003451367607, 1.57910347),
                 (809.2209906, 809.2209906, 829.2196003, 481.7784238)),
    "CAM_BACK_LEFT": ((0.6924185586, -0.7031619418, -0.1164834303, 0.1120331814),
                      (1.035691023, 0.4847950339, 1.590970159),
                      (1256.741481, 1256.741481, 792.1125741, 492.7757465)),
    "CAM_BACK_RIGHT": ((0.1228098002, -0.1324008418, -0.7004305823, 0.6904960314),
                       (1.014878154, -0.4805682302, 1.562395453),
                       (1259.513741, 1259.513741, 807.2529054, 501.1957988)),
}

# The ego vehicle's footprint (a Renault Zoe) from the ego frame's origin at the rear axle: centre x, length, width.
EGO_CENTRE_X, EGO_LENGTH, EGO_WIDTH = 1.3, 4.1, 1.8


@dataclass(frozen=True)
class Sensor:
    """A sensor's pose in the ego frame. ``rotation`` holds the stored quaternion; ``matrix`` is derived from it, so
    the geometry the renderers use is exactly the geometry written to ``calibrated_sensor.json``."""
    channel: str
    rotation: tuple
    translation: tuple
    intrinsic: np.ndarray  # 3x3, or None for the LiDAR

    @property
    def matrix(self):
        m = np.eye(4)
        m[:3, :3] = Quaternion(self.rotation).rotation_matrix
        m[:3, 3] = self.translation
        return m


def scaled_intrinsic(fx, fy, cx, cy, image_size):
    """Intrinsics for an ``(H, W)`` image with the real camera's field of view: scale by ``W / 1600`` (square pixels),
    then crop (or pad) the rows symmetrically to ``H``, as a centre crop of the scaled image would."""
    height, width = image_size
    scale = width / REAL_IMAGE_SIZE[1]
    row_offset = (REAL_IMAGE_SIZE[0] * scale - height) / 2.0
    return np.array([[fx * scale, 0.0, cx * scale], [0.0, fy * scale, cy * scale - row_offset], [0.0, 0.0, 1.0]])


def build_rig(image_size):
    """(lidar, cameras): the LIDAR_TOP sensor and the six cameras in CAMERA_NAMES order."""
    lidar = Sensor("LIDAR_TOP", LIDAR_TO_EGO[0], LIDAR_TO_EGO[1], None)
    cameras = [Sensor(name, CAMERA_CALIBRATION[name][0], CAMERA_CALIBRATION[name][1],
                      scaled_intrinsic(*CAMERA_CALIBRATION[name][2], image_size)) for name in CAMERA_NAMES]
    return lidar, cameras
