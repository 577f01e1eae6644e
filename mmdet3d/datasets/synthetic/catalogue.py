"""What the generated world is made of: object classes (sizes, colours, LiDAR reflectivity, frequencies) and the
fixed nuScenes vocabulary tables (categories, attributes, visibilities)."""
from dataclasses import dataclass

DETECTION_CLASSES = ("car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle",
                     "pedestrian", "traffic_cone")

# nuScenes detection-eval distance thresholds (metres from the ego, xy), per class.
EVAL_RANGE = {"car": 50.0, "truck": 50.0, "construction_vehicle": 50.0, "bus": 50.0, "trailer": 50.0,
              "barrier": 30.0, "motorcycle": 40.0, "bicycle": 40.0, "pedestrian": 40.0, "traffic_cone": 30.0}


@dataclass(frozen=True)
class ObjectClass:
    """One kind of object. ``variants`` are ``(category, weight, (l, w, h))``; the hue (degrees) identifies the class
    in the images, so every detection class gets its own; ``reflectivity`` scales LiDAR intensity (0-255);
    ``per_scene`` is the expected number of instances (rows, for cones and barriers) in a scene besides the one
    instance of every detection class that each scene is guaranteed."""
    name: str
    variants: tuple
    hue: float
    saturation: float
    reflectivity: float
    per_scene: float


OBJECT_CLASSES = {c.name: c for c in (
    ObjectClass("car", (("vehicle.car", 1.0, (4.6, 1.95, 1.7)),), 216, 0.85, 45, 14.0),
    ObjectClass("truck", (("vehicle.truck", 1.0, (7.0, 2.5, 2.9)),), 252, 0.8, 45, 2.0),
    ObjectClass("construction_vehicle", (("vehicle.construction", 1.0, (6.4, 2.8, 3.2)),), 72, 0.9, 45, 0.35),
    ObjectClass("bus", (("vehicle.bus.rigid", 1.0, (11.0, 2.9, 3.4)),), 0, 0.85, 45, 0.35),
    ObjectClass("trailer", (("vehicle.trailer", 1.0, (10.0, 2.8, 3.7)),), 288, 0.75, 40, 0.35),
    ObjectClass("barrier", (("movable_object.barrier", 1.0, (0.5, 2.3, 1.0)),), 180, 0.85, 140, 2.5),
    ObjectClass("motorcycle", (("vehicle.motorcycle", 1.0, (2.1, 0.8, 1.5)),), 144, 0.85, 35, 1.3),
    ObjectClass("bicycle", (("vehicle.bicycle", 1.0, (1.75, 0.6, 1.3)),), 108, 0.85, 25, 1.5),
    ObjectClass("pedestrian", (("human.pedestrian.adult", 0.85, (0.75, 0.68, 1.75)),
                               ("human.pedestrian.child", 0.1, (0.55, 0.5, 1.3)),
                               ("human.pedestrian.construction_worker", 0.05, (0.75, 0.7, 1.8))), 324, 0.75, 15, 16.0),
    ObjectClass("traffic_cone", (("movable_object.trafficcone", 1.0, (0.42, 0.42, 1.05)),), 36, 0.95, 160, 2.0),
    # Not a detection class: bins and carts, grey-brown, that a detector must learn to ignore.
    ObjectClass("pushable_pullable", (("movable_object.pushable_pullable", 1.0, (0.7, 0.6, 1.1)),), 30, 0.15, 20,
                1.5),
)}

# The 32 categories of nuScenes v1.0 (with lidarseg indices), in index order.
CATEGORIES = (
    ("noise", "Any lidar return that does not correspond to a physical object."),
    ("animal", "All animals."),
    ("human.pedestrian.adult", "Adult subcategory."),
    ("human.pedestrian.child", "Child subcategory."),
    ("human.pedestrian.construction_worker", "Construction worker."),
    ("human.pedestrian.personal_mobility", "A small electric or self-propelled vehicle."),
    ("human.pedestrian.police_officer", "Police officer."),
    ("human.pedestrian.stroller", "Strollers."),
    ("human.pedestrian.wheelchair", "Wheelchairs."),
    ("movable_object.barrier", "Temporary road barrier placed in the scene in order to redirect traffic."),
    ("movable_object.debris", "Movable object that is left on the driveable surface."),
    ("movable_object.pushable_pullable", "Objects that a pedestrian may push or pull."),
    ("movable_object.trafficcone", "All types of traffic cone."),
    ("static_object.bicycle_rack", "Area or device intended to park or secure the bicycles in a row."),
    ("vehicle.bicycle", "Human or electric powered 2-wheeled vehicle designed to travel at lower speeds."),
    ("vehicle.bus.bendy", "Bendy bus subcategory."),
    ("vehicle.bus.rigid", "Rigid bus subcategory."),
    ("vehicle.car", "Vehicle designed primarily for personal use."),
    ("vehicle.construction", "Vehicles primarily designed for construction."),
    ("vehicle.emergency.ambulance", "All types of ambulances."),
    ("vehicle.emergency.police", "All types of police vehicles."),
    ("vehicle.motorcycle", "Gasoline or electric powered 2-wheeled vehicle designed to move rapidly."),
    ("vehicle.trailer", "Any vehicle trailer."),
    ("vehicle.truck", "Vehicles primarily designed to haul cargo."),
    ("flat.driveable_surface", "All paved or unpaved surfaces that a car can drive on."),
    ("flat.other", "All other forms of horizontal ground-level structures."),
    ("flat.sidewalk", "Sidewalk, pedestrian walkways, bike paths, etc."),
    ("flat.terrain", "Natural horizontal surfaces such as ground level horizontal vegetation."),
    ("static.manmade", "Includes man-made structures but not limited to buildings, walls, guard rails."),
    ("static.other", "Points in the background that are not distinguishable."),
    ("static.vegetation", "Any vegetation in the frame that is higher than the ground."),
    ("vehicle.ego", "The vehicle on which the sensors are mounted."),
)

ATTRIBUTES = (
    ("vehicle.moving", "Vehicle is moving."),
    ("vehicle.stopped", "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move."),
    ("vehicle.parked", "Vehicle is stationary (usually for longer duration) with no immediate intent to move."),
    ("cycle.with_rider", "There is a rider on the bicycle or motorcycle."),
    ("cycle.without_rider", "There is NO rider on the bicycle or motorcycle."),
    ("pedestrian.sitting_lying_down", "The human is sitting or lying down."),
    ("pedestrian.standing", "The human is standing."),
    ("pedestrian.moving", "The human is moving."),
)

# (token, level, description, lower bound of the visible fraction).
VISIBILITIES = (
    ("1", "v0-40", "visibility of whole object is between 0 and 40%", 0.0),
    ("2", "v40-60", "visibility of whole object is between 40 and 60%", 0.4),
    ("3", "v60-80", "visibility of whole object is between 60 and 80%", 0.6),
    ("4", "v80-100", "visibility of whole object is between 80 and 100%", 0.8),
)


def visibility_token(fraction):
    """nuScenes visibility token for the visible fraction of an object over all six images."""
    token = VISIBILITIES[0][0]
    for tok, _, _, lower in VISIBILITIES:
        if fraction >= lower:
            token = tok
    return token
