"""Ray casting shared by the camera and LiDAR renderers: oriented boxes (slab test) and the ground plane ``z = 0``,
all in the ego frame."""
import numpy as np

# Face index -> outward normal in the box frame: +x, -x, +y, -y, +z, -z.
FACE_NORMALS = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)


# The heading cue: the front end of every object (the part of its length within FRONT_FRACTION of the front face,
# that face included) is painted light in the images and returns FRONT_REFLECTIVITY_GAIN x the LiDAR intensity, so
# that the front differs from the back and the annotated yaw (along +l) points to it.
FRONT_FRACTION = 0.3
FRONT_REFLECTIVITY_GAIN = 2.5


def in_front_end(points, boxes):
    """Whether surface points ``[N, 3]`` lie in the front end of their boxes ``[N, 7]`` (same frame)."""
    along = (points[:, 0] - boxes[:, 0]) * np.cos(boxes[:, 6]) + (points[:, 1] - boxes[:, 1]) * np.sin(boxes[:, 6])
    return along >= boxes[:, 3] * (0.5 - FRONT_FRACTION)


# Corners of the unit box (index bits: x, y, z sign) and the 12 edges between them.
UNIT_CORNERS = np.array([[sx, sy, sz] for sx in (-.5, .5) for sy in (-.5, .5) for sz in (-.5, .5)])
EDGES = np.array([(i, i ^ bit) for i in range(8) for bit in (1, 2, 4) if i < i ^ bit])


def box_corners(box):
    """Corners ``[8, 3]`` of one box ``(x, y, z, l, w, h, yaw)``."""
    return (UNIT_CORNERS * box[3:6]) @ box_rotation(box[6]).T + box[:3]


def box_rotation(yaw):
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def ray_box(origin, dirs, box):
    """Entry distance and face of rays ``origin + t * dirs`` (``dirs [N, 3]``, any length; ``t`` in units of it)
    against one box ``(x, y, z, l, w, h, yaw)``: ``t [N]`` (inf on a miss) and face index ``[N]`` (see
    FACE_NORMALS; 0 on a miss). Rays starting inside the box miss it."""
    rot = box_rotation(box[6])
    o = rot.T @ (np.asarray(origin, dtype=np.float64) - box[:3])
    d = dirs @ rot
    d[d == 0.0] = 1e-30
    t_enter, t_exit = np.full(len(d), -np.inf), np.full(len(d), np.inf)
    near = []
    for axis in range(3):
        half = box[3 + axis] / 2
        t1 = (-half - o[axis]) / d[:, axis]
        t2 = (half - o[axis]) / d[:, axis]
        near.append(np.minimum(t1, t2))
        t_enter = np.maximum(t_enter, near[-1])
        t_exit = np.minimum(t_exit, np.maximum(t1, t2))
    hit = (t_enter <= t_exit) & (t_enter > 0)
    face = np.zeros(len(d), dtype=np.int64)
    # The entry face is on the axis whose slab is entered last; its normal opposes the ray along that axis.
    for axis in (1, 2):
        on_axis = hit & (near[axis] == t_enter)
        face[on_axis] = 2 * axis
    face[hit] += d[hit, face[hit] // 2] > 0
    return np.where(hit, t_enter, np.inf), face


def ray_ground(origin, dirs):
    """Distance ``t [N]`` to the ground plane ``z = 0`` (inf for rays that do not go down)."""
    dz = dirs[:, 2]
    with np.errstate(divide="ignore"):
        t = -origin[2] / dz
    return np.where(dz < 0, t, np.inf)


def world_to_ego_boxes(boxes, ego_pose):
    """World boxes ``[N, 7]`` into the ego frame of ``ego_pose = (x, y, yaw)`` (the ego frame has no roll/pitch and
    sits on the ground)."""
    out = np.array(boxes, dtype=np.float64, copy=True).reshape(-1, 7)
    c, s = np.cos(ego_pose[2]), np.sin(ego_pose[2])
    dx, dy = out[:, 0] - ego_pose[0], out[:, 1] - ego_pose[1]
    out[:, 0], out[:, 1] = c * dx + s * dy, -s * dx + c * dy
    out[:, 6] = out[:, 6] - ego_pose[2]
    return out
