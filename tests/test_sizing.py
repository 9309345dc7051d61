"""The sizing module: forms, bounds, and the fit-inside rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idme_passback import (
    MAX_DIMENSION,
    MIN_DIMENSION,
    InvalidSizeError,
    Size,
    delivered_size,
    parse_size,
)

in_bounds = st.integers(MIN_DIMENSION, MAX_DIMENSION)
out_of_bounds = st.integers(max_value=MIN_DIMENSION - 1) | st.integers(min_value=MAX_DIMENSION + 1)


def test_bounds_are_the_documented_ones() -> None:
    assert (MIN_DIMENSION, MAX_DIMENSION) == (100, 1000)


@pytest.mark.parametrize("value", [100, 1000, 555])
def test_edges_are_accepted(value: int) -> None:
    assert Size(value, value) == Size(value, value)
    assert parse_size(f"{value}x{value}") == Size(value, value)


@pytest.mark.parametrize(
    ("width", "height", "named", "bound"),
    [
        (99, 200, "width 99", "minimum of 100"),
        (1001, 200, "width 1001", "maximum of 1000"),
        (300, 99, "height 99", "minimum of 100"),
        (300, 1001, "height 1001", "maximum of 1000"),
    ],
)
def test_each_dimension_out_of_bounds_names_value_and_bound(
    width: int, height: int, named: str, bound: str
) -> None:
    with pytest.raises(InvalidSizeError) as caught:
        Size(width, height)
    assert named in str(caught.value)
    assert bound in str(caught.value)
    with pytest.raises(InvalidSizeError, match=bound):
        parse_size(f"{width}x{height}")
    with pytest.raises(InvalidSizeError, match=bound):
        parse_size((width, height))


@pytest.mark.parametrize("bad", [True, 300.0, "300", None, 300.5])
def test_non_int_dimensions_are_rejected_not_converted(bad: object) -> None:
    with pytest.raises(InvalidSizeError, match="must be an int"):
        Size(bad, 300)  # type: ignore[arg-type]


def test_invalid_size_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the point is the base class
        parse_size("0x0")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("300x200", Size(300, 200)),
        ("300X200", Size(300, 200)),
        ((300, 200), Size(300, 200)),
        ([300, 200], Size(300, 200)),
        (Size(300, 200), Size(300, 200)),
        (None, None),
    ],
)
def test_accepted_forms(value: object, expected: Size | None) -> None:
    assert parse_size(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        " 300x200",
        "300x200 ",
        "300 x 200",
        "+300x200",
        "0300x200",
        "300*200",
        "300x",
        "x200",
        "300x200x100",
        "",
        "\uff13\uff10\uff10x200",  # full-width digits
        "-300x200",
        "300.0x200",
    ],
)
def test_malformed_strings_are_rejected(text: str) -> None:
    with pytest.raises(InvalidSizeError, match="WxH"):
        parse_size(text)


@pytest.mark.parametrize("value", [(300,), (300, 200, 100), {"w": 300}, 300, b"300x200"])
def test_wrong_shapes_are_rejected(value: object) -> None:
    with pytest.raises(InvalidSizeError):
        parse_size(value)  # type: ignore[arg-type]


def test_str_is_the_query_form() -> None:
    assert str(Size(300, 200)) == "300x200"


@given(in_bounds, in_bounds)
def test_parse_and_format_round_trip(width: int, height: int) -> None:
    size = Size(width, height)
    assert parse_size(str(size)) == size
    assert str(parse_size(f"{width}x{height}")) == f"{width}x{height}"


@given(out_of_bounds, in_bounds)
def test_every_out_of_bound_value_is_rejected(bad: int, good: int) -> None:
    for pair in ((bad, good), (good, bad)):
        with pytest.raises(InvalidSizeError):
            Size(*pair)
        with pytest.raises(InvalidSizeError):
            parse_size(pair)


def test_the_seeds_example_gives_250x200() -> None:
    assert delivered_size((500, 400), "300x200") == (250, 200)


@pytest.mark.parametrize(
    ("original", "box", "expected"),
    [
        ((1000, 500), (300, 300), (300, 150)),  # width binds
        ((500, 1000), (300, 300), (150, 300)),  # height binds
        ((856, 540), (300, 200), (300, 189)),  # 189.25 rounds down
        ((3000, 2000), (1000, 1000), (1000, 667)),  # 666.67 rounds up
        ((500, 400), None, (500, 400)),  # no size: the original
    ],
)
def test_fit_inside(
    original: tuple[int, int], box: tuple[int, int] | None, expected: tuple[int, int]
) -> None:
    assert delivered_size(original, box) == expected


def test_a_smaller_original_is_assumed_not_enlarged() -> None:
    assert delivered_size((200, 100), "400x400") == (200, 100)
    assert delivered_size((200, 100), "400x400", enlarge=True) == (400, 200)


@given(st.integers(1, 5000), st.integers(1, 5000), in_bounds, in_bounds)
def test_delivered_size_always_fits_the_box(w: int, h: int, bw: int, bh: int) -> None:
    dw, dh = delivered_size((w, h), (bw, bh))
    assert 1 <= dw <= max(bw, 1)
    assert 1 <= dh <= max(bh, 1)
    assert dw == bw or dh == bh or (dw, dh) == (w, h)
