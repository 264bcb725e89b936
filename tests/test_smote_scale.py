"""benchmarks/smote_scale.py at a tiny size, so that it never rots (no timing asserted)."""

from benchmarks import smote_scale


def test_each_method_is_measured_in_its_own_process():
    results = smote_scale.run(rows=(400,), dimensions=8, timeout=300)["smote_scale"]
    by_method = {result["method"]: result for result in results}
    assert by_method["smote"]["rows_after"] == 2 * (400 - by_method["smote"]["minority"])
    assert by_method["class_weight"]["rows_after"] == 400
    assert all(result["peak_rss_mb"] > 0 and result["seconds"] >= 0 for result in results)
