"""SimDistill re-implementation: BEVFusion-style LiDAR-camera teacher and camera-only simulated-fusion student."""
__version__ = "0.1.0"
