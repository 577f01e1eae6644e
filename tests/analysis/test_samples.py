"""The analysis tools' sample choice: a config's split and evenly spread indices."""
import pytest

from mmdet3d.analysis.samples import split_config, spread_indices


def test_spread_indices_cover_the_split():
    assert spread_indices(10, 3) == [0, 4, 9]  # linspace(0, 9, 3) = 0, 4.5, 9 rounds half to even
    assert spread_indices(2, 5) == [0, 1]
    with pytest.raises(ValueError, match="--samples"):
        spread_indices(3, 0)
    with pytest.raises(ValueError, match="empty"):
        spread_indices(0, 3)


def test_split_config_names_a_missing_split():
    assert split_config({"data": {"val": {"type": "X"}}}, "val") == {"type": "X"}
    with pytest.raises(ValueError, match="'data.train'"):
        split_config({"data": {"val": {"type": "X"}}}, "train")
