"""Many photos, one line per kind of reason."""

from engine.messages import grouped, named


def test_reasons_that_differ_in_numbers_only_are_one_line():
    reasons = {f"p{i:02d}.jpg": f"only {70 + i} distinctive points found" for i in range(14)}
    reasons["odd.jpg"] = "no other photo overlaps it"
    lines = grouped(reasons)
    assert lines == [
        "p00.jpg, p01.jpg, p02.jpg, p03.jpg, p04.jpg, p05.jpg, p06.jpg, p07.jpg, p08.jpg, "
        "p09.jpg and 4 more: only 70 to 83 distinctive points found",
        "odd.jpg: no other photo overlaps it",
    ]


def test_one_photo_keeps_its_own_numbers():
    assert grouped({"a.jpg": "matched 3 photos (at most 12.5 matches)"}) == [
        "a.jpg: matched 3 photos (at most 12.5 matches)"
    ]
    assert grouped({}) == []
    assert named(["a", "b", "c"], 2) == "a, b and 1 more"
