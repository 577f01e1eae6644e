"""The road the ego drives on: a circular arc (or a straight line) with lanes, parking strips and sidewalks, and the
mapping between world ``(x, y)`` and road coordinates ``(s, d)`` (arc length along the ego's lane centre, lateral
offset to the left)."""
import numpy as np

# Lateral layout (metres, left of the ego lane centre positive). Traffic keeps right: d < LANE_CENTRE_LINE drives
# along the ego's direction, d > LANE_CENTRE_LINE against it.
LANE_WIDTH = 3.5
SAME_DIRECTION_LANES = (0.0, -3.5)
ONCOMING_LANES = (3.5, 7.0)
LANE_CENTRE_LINE = 1.75
DASHED_LINES = (-1.75, 5.25)
ROAD_EDGES = (-5.25, 8.75)
PARKING_STRIPS = ((-8.0, -5.25), (8.75, 11.5))
SIDEWALKS = ((-12.0, -8.0), (11.5, 15.5))
OPEN_AREA = (17.0, 42.0)  # |d| of the lots beyond the sidewalks


class RoadFrame:
    """Arc-length coordinates along a path starting at ``origin`` with heading ``heading`` and constant curvature
    ``curvature`` (1/m, positive turns left; 0 is a straight road)."""

    def __init__(self, origin, heading, curvature):
        self.origin = np.asarray(origin, dtype=np.float64)
        self.heading = float(heading)
        self.curvature = float(curvature)
        self.left = np.array([-np.sin(self.heading), np.cos(self.heading)])
        if self.curvature != 0.0:
            self.centre = self.origin + self.left / self.curvature

    def to_world(self, s, d):
        """World ``(x, y)`` ``[..., 2]`` and the road's heading at ``(s, d)``."""
        s, d = np.broadcast_arrays(np.asarray(s, np.float64), np.asarray(d, np.float64))
        theta = self.heading + self.curvature * s
        normal = np.stack([-np.sin(theta), np.cos(theta)], -1)
        if self.curvature == 0.0:
            forward = np.array([np.cos(self.heading), np.sin(self.heading)])
            return self.origin + s[..., None] * forward + d[..., None] * normal, theta
        return self.centre - (1.0 / self.curvature - d)[..., None] * normal, theta

    def to_road(self, xy):
        """``(s, d)`` of world points ``[..., 2]`` (valid within a half turn of the origin)."""
        xy = np.asarray(xy, dtype=np.float64)
        if self.curvature == 0.0:
            rel = xy - self.origin
            forward = np.array([np.cos(self.heading), np.sin(self.heading)])
            return rel @ forward, rel @ self.left
        v = xy - self.centre
        sign = np.sign(self.curvature)
        theta = np.arctan2(sign * v[..., 0], -sign * v[..., 1])
        rho = sign * np.hypot(v[..., 0], v[..., 1])
        s = (np.mod(theta - self.heading + np.pi, 2 * np.pi) - np.pi) / self.curvature
        return s, 1.0 / self.curvature - rho

    def lane_speed_factor(self, d):
        """ds/dt per m/s of travel along the lane at lateral offset ``d`` (lanes are concentric arcs)."""
        return 1.0 / (1.0 - self.curvature * np.asarray(d, dtype=np.float64))
