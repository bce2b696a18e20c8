"""The explicit list of network levels, shared by the batching code and the model (DESIGN.md section 3)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LevelSpec:
    """One resolution level of the KPConv pyramid.

    grid_size:      subsampling voxel size of this level's points (m)
    conv_radius:    radius of the KPConv neighbourhoods queried at this level (m)
    neighbour_cap:  maximum neighbours kept per point (nearest first); the rest are dropped
    """

    grid_size: float
    conv_radius: float
    neighbour_cap: int

    @property
    def kernel_extent(self) -> float:
        """Influence distance of one kernel point: 1.2 x grid size (KPConv's KP_extent)."""
        return 1.2 * self.grid_size


def make_levels(
    first_grid: float, caps: list[int] | tuple[int, ...], conv_radius_factor: float = 2.5
) -> list[LevelSpec]:
    """Levels whose grid doubles at each step: dl, 2dl, 4dl, ... with conv radius = factor x grid."""
    if first_grid <= 0:
        raise ValueError(f"first grid size must be positive, got {first_grid}")
    if len(caps) < 2:
        raise ValueError(f"need at least 2 levels, got {len(caps)}")
    levels = []
    for index, cap in enumerate(caps):
        grid = first_grid * 2**index
        levels.append(
            LevelSpec(grid_size=grid, conv_radius=conv_radius_factor * grid, neighbour_cap=int(cap))
        )
    return levels
