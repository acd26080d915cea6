"""Hostile keys: a listing rewritten by the proxy plants keys that would escape `dest` or
be misread on disk. Every one is refused at plan time, before anything is written."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import profile_for
from faultproxy import FaultProxy, Rule
from ursa import DataInterface, ObjectStoreError, Profile
from ursa.testing import Recording, RowSpec, build_recording

BAD_SEGMENTS = ["..", ".", "", "a\\b", "a\x00b", "tab\tch", "new\nline", "del\x7f"]
SAFE = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..")
)


@st.composite
def hostile_rel(draw: st.DrawFn) -> str:
    """A relative key with at least one bad segment somewhere, or an absolute one."""
    segments = draw(st.lists(SAFE, min_size=0, max_size=3))
    bad = draw(st.sampled_from(BAD_SEGMENTS))
    # An empty segment never goes last: a trailing "/" makes a folder marker, which
    # object_store normalises away (test_nothing_lost covers markers).
    last = len(segments) - 1 if bad == "" and segments else len(segments)
    segments.insert(draw(st.integers(0, last)), bad)
    rel = "/".join(segments)
    return "/" + rel if draw(st.booleans()) and rel else rel


@pytest.fixture(scope="module")
def rec(profile: Profile) -> Recording:
    return build_recording(profile, [RowSpec("audio", status="raw", segments=3)], seed=41)


def plant(rec: Recording, rel: str) -> Rule:
    """Replace the second segment's key in any raw-bucket listing with prefix + rel."""
    prefix = f"{rec.recording_hash}/audio/"
    target = f"<Key>{prefix}seg-000001.bin</Key>".encode()
    escaped = "".join(c if c.isprintable() else f"&#{ord(c)};" for c in html.escape(prefix + rel))
    replacement = f"<Key>{escaped}</Key>".encode()
    return Rule(
        "rewrite_body",
        method="GET",
        key=r"^/ursa-raw/?$",
        rewrite=lambda body: body.replace(target, replacement),
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rel=hostile_rel())
def test_hostile_keys_are_refused_before_any_byte(
    proxy: FaultProxy, rec: Recording, tmp_path: Path, rel: str
) -> None:
    proxy.clear()
    rule = proxy.add(plant(rec, rel))
    data = DataInterface(profile_for(proxy.endpoint))
    rows = data.query(recording_hash=rec.recording_hash, status="raw")
    dest = tmp_path / re.sub(r"\W", "_", repr(rel))
    if "\x00" in rel:
        # NUL cannot appear in XML at all: the whole listing is refused as malformed.
        with pytest.raises(ObjectStoreError, match="invalid list response"):
            data.download(rows, dest)
    else:
        with pytest.raises(ValueError, match="unsafe object key"):
            data.download(rows, dest)
    assert rule.fired >= 1, "the listing was not rewritten"
    assert not dest.exists()
    proxy.clear()


def test_an_honest_listing_through_the_same_path_works(
    proxy: FaultProxy, rec: Recording, tmp_path: Path
) -> None:
    proxy.clear()
    rule = proxy.add(plant(rec, "seg-000001.bin"))  # rewritten to itself
    data = DataInterface(profile_for(proxy.endpoint))
    paths = data.download(data.query(recording_hash=rec.recording_hash, status="raw"), tmp_path)
    assert rule.fired >= 1 and [p.name for p in paths] == [f"seg-{i:06d}.bin" for i in range(3)]
