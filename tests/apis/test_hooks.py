from mmdet3d.apis.hooks import plural


def test_run_summary_counts_in_the_right_number():
    assert plural(1, "epoch") == "1 epoch"
    assert [plural(n, "epoch") for n in (0, 2, 18)] == ["0 epochs", "2 epochs", "18 epochs"]
