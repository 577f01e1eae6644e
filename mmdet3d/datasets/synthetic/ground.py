"""Ground appearance: asphalt with lane markings, parking strips, paving-slab sidewalks and checkered terrain. The
patterns are fixed in the world, so their image size shrinks with distance (a depth cue), and fade to their mean
where a pixel covers more than a pattern cell (mip-mapping, against aliasing)."""
import numpy as np

from . import road as R

ASPHALT, STRIP, SIDEWALK, TERRAIN = 0, 1, 2, 3
# Mean colour (RGB 0-255), noise cell size (m) and noise amplitude, checker cell size (m, 0 = none) and checker
# contrast, LiDAR reflectivity (0-255) of each ground zone.
ZONES = {
    ASPHALT: ((80.0, 80.0, 84.0), 0.5, 12.0, 0.0, 0.0, 8.0),
    STRIP: ((98.0, 97.0, 96.0), 0.5, 12.0, 0.0, 0.0, 10.0),
    SIDEWALK: ((158.0, 154.0, 146.0), 0.25, 8.0, 1.0, 14.0, 30.0),
    TERRAIN: ((118.0, 116.0, 96.0), 0.5, 12.0, 2.0, 16.0, 18.0),
}
MARKING_COLOUR = np.array([228.0, 228.0, 222.0])
MARKING_REFLECTIVITY = 90.0
MARKING_WIDTH = 0.15
DASH_LENGTH, DASH_PERIOD = 3.0, 9.0
HAZE_COLOUR = np.array([196.0, 205.0, 215.0])
HAZE_DISTANCE = 400.0


def hash01(ix, iy, salt):
    """Deterministic pseudo-random numbers in [0, 1) for integer cell coordinates (a splitmix-style integer hash)."""
    h = (np.asarray(ix).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ \
        (np.asarray(iy).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)) ^ np.uint64(salt & 0xFFFFFFFF)
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    h = h ^ (h >> np.uint64(31))
    return (h >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def zones(d):
    """Zone id per lateral offset ``d``."""
    d = np.asarray(d)
    zone = np.full(d.shape, TERRAIN, dtype=np.int64)
    for lo, hi in R.SIDEWALKS:
        zone[(d >= lo) & (d < hi)] = SIDEWALK
    for lo, hi in R.PARKING_STRIPS:
        zone[(d >= lo) & (d < hi)] = STRIP
    zone[(d >= R.ROAD_EDGES[0]) & (d < R.ROAD_EDGES[1])] = ASPHALT
    return zone


def markings(s, d):
    """Boolean mask of painted lines: dashed lane lines, a solid double centre line and solid edge lines."""
    half = MARKING_WIDTH / 2
    dashed = np.zeros(np.shape(d), dtype=bool)
    for line in R.DASHED_LINES:
        dashed |= np.abs(d - line) < half
    dashed &= np.mod(s, DASH_PERIOD) < DASH_LENGTH
    solid = (np.abs(d - (R.LANE_CENTRE_LINE - 0.12)) < half) | (np.abs(d - (R.LANE_CENTRE_LINE + 0.12)) < half)
    for edge, inward in ((R.ROAD_EDGES[0], 1), (R.ROAD_EDGES[1], -1)):
        solid |= np.abs(d - (edge + inward * 0.3)) < half
    return dashed | solid


def _pattern(xy, zone, salt, footprint):
    """Per-point brightness offset of the zone's noise cells and checker, faded by the pixel footprint (m)."""
    offset = np.zeros(len(xy))
    for zid, (_, noise_cell, noise_amp, checker_cell, checker_amp, _) in ZONES.items():
        sel = zone == zid
        if not sel.any():
            continue
        p = xy[sel]
        fp = footprint[sel] if footprint is not None else 0.0
        cells = np.floor(p / noise_cell).astype(np.int64)
        noise = (hash01(cells[:, 0], cells[:, 1], salt + zid) - 0.5) * 2 * noise_amp
        val = noise * np.clip((noise_cell - fp) / (0.5 * noise_cell), 0, 1)
        if checker_cell:
            cc = np.floor(p / checker_cell).astype(np.int64)
            checker = np.where((cc[:, 0] + cc[:, 1]) % 2 == 0, 1.0, -1.0) * checker_amp
            val += checker * np.clip((checker_cell - fp) / (0.5 * checker_cell), 0, 1)
        offset[sel] = val
    return offset


def ground_colour(xy, road, salt, footprint, lateral_footprint, distance):
    """RGB (0-255 float) ``[N, 3]`` of ground points ``xy [N, 2]`` seen by pixels covering ``footprint`` metres along
    the view and ``lateral_footprint`` across it, ``distance`` metres away."""
    s, d = road.to_road(xy)
    zone = zones(d)
    base = np.array([ZONES[z][0] for z in range(4)])[zone]
    rgb = base + _pattern(xy, zone, salt, footprint)[:, None]
    paint = markings(s, d) * np.clip(MARKING_WIDTH / np.maximum(lateral_footprint, 1e-6), 0, 1)
    rgb = rgb * (1 - paint[:, None]) + MARKING_COLOUR * paint[:, None]
    haze = 1 - np.exp(-distance / HAZE_DISTANCE)
    return rgb * (1 - haze[:, None]) + HAZE_COLOUR * haze[:, None]


def ground_reflectivity(xy, road, salt):
    """LiDAR reflectivity (0-255) ``[N]`` of ground points: paint is retro-reflective, asphalt dark."""
    s, d = road.to_road(xy)
    zone = zones(d)
    refl = np.array([ZONES[z][5] for z in range(4)])[zone]
    cells = np.floor(xy / 0.5).astype(np.int64)
    refl = refl * (0.7 + 0.6 * hash01(cells[:, 0], cells[:, 1], salt + 17))
    return np.where(markings(s, d), MARKING_REFLECTIVITY, refl)
