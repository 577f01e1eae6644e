"""BEV pooling of lift-splat view transforms."""
from .bev_pool import (CELL_RULES, BEVPoolPlan, bev_cells, bev_pool, bev_pool_depth, bev_pool_outer_product,
                       cells_with_batch, outer_product_rows)

__all__ = ["CELL_RULES", "BEVPoolPlan", "bev_cells", "bev_pool", "bev_pool_depth", "bev_pool_outer_product",
           "cells_with_batch", "outer_product_rows"]
