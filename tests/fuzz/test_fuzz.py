"""The bounded fuzz suite of `make test`: mutated real files for every loader, a fixed seed, about 30 s.

`make fuzz` runs the same targets under atheris, coverage-guided, for as long as asked (run.py).
"""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.targets import TARGETS

REGRESSIONS = Path(__file__).parent / "regressions"  # inputs that once broke a loader: <target>-<what>
EXAMPLES = {
    "serve-infer-json": 150,
    "serve-infer-binary": 150,
    "serve-multipart": 150,
    "image": 400,
    "run-config": 60,
    "run-summary": 60,
    "resume": 120,
    "estimator": 120,
    "search-results": 60,
}
INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"'", b'"', b"(", b"{", b"[", b"\\", b"\n", b"-1",
               b"1e999", b"NaN", b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"99999999999"]  # fmt: skip


def marker_places(data: bytearray, markers) -> list[int]:
    """Where each marker occurs in ``data`` (at most 64 places)."""
    places: list[int] = []
    for marker in markers:
        at = data.find(marker)
        while at >= 0 and len(places) < 64:
            places.append(at)
            at = data.find(marker, at + 1)
    return places


@st.composite
def mutated(draw, seeds, markers):
    """A seed with one to eight mutations: byte flips, overwrites, inserts, deletions, truncation,
    each at a random place or next to a marker (a header, a key) where damage matters most."""
    out = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        places = marker_places(out, markers)
        if places and draw(st.booleans()):
            at = min(len(out), draw(st.sampled_from(places)) + draw(st.integers(0, 48)))
        else:
            at = draw(st.integers(0, len(out)))
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if kind == "flip" and at < len(out):
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            value = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=4))
            out[at : at + len(value)] = value
        elif kind == "insert":
            out[at:at] = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del out[at : at + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del out[at:]
    return bytes(out)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_loader_accepts_or_refuses_with_one_line(name):
    target = TARGETS[name]
    seeds = target.seeds()
    for seed in seeds:  # the real files themselves are accepted
        target.check(seed)

    @settings(max_examples=EXAMPLES.get(name, 300), derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(mutated(seeds, target.markers))
    def fuzz(payload):
        target.check(payload)

    fuzz()


def test_the_property_fails_on_an_error_the_cli_would_show_as_a_traceback(tmp_path):
    """A loader that raises anything but ValueError is reported: the suite can fail."""
    from tests.fuzz.targets import Target

    def broken(payload, scratch):
        raise TypeError("unexpected")

    with pytest.raises(TypeError):
        Target("broken", broken, lambda: [b""]).check(b"x")
    Target("refusing", lambda p, s: int("x"), lambda: [b""]).check(b"x")  # ValueError: refused properly


@pytest.mark.parametrize("path", sorted(REGRESSIONS.iterdir()), ids=lambda p: p.name)
def test_inputs_that_once_broke_a_loader_are_refused_properly(path, tmp_path):
    name = max((n for n in TARGETS if path.name.startswith(n + "-")), key=len)
    with pytest.raises(ValueError):
        TARGETS[name].load(path.read_bytes(), tmp_path)
