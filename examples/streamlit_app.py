"""Download one recording with a live Streamlit progress bar (the seed page's pattern).

    URSA_PROFILE=r2 URSA_DEST=./sessions streamlit run examples/streamlit_app.py

The profile comes from ``$URSA_PROFILE`` (default ``r2``), resolved like everywhere else in
ursa: built-in profiles and ``$URSA_CONFIG``; credentials from the environment (e.g.
``URSA_R2_ACCESS_KEY_ID`` / ``URSA_R2_SECRET_ACCESS_KEY``) or 1Password references — never
typed into the page. Files land under ``$URSA_DEST`` (default: a directory in the system
temp dir), in the default ``by_recording`` layout.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import streamlit as st

from ursa import ConfigurationError, DataInterface, ObjectStoreError
from ursa.progress import streamlit_progress

PROFILE = os.environ.get("URSA_PROFILE") or "r2"
DEST = Path(os.environ.get("URSA_DEST") or Path(tempfile.gettempdir()) / "ursa_sessions")
ERRORS = (ObjectStoreError, FileExistsError, ValueError, ConfigurationError)

st.title("Download a recording")
st.caption(f"Profile `{PROFILE}` → `{DEST}`")

try:
    data = DataInterface(profile=PROFILE)
    hashes = data.query(status="ingested").recording_hashes
except ERRORS as e:
    st.error(f"{type(e).__name__}: {e}")
    st.stop()

recording = st.selectbox("Recording", hashes, index=None, placeholder="Pick a recording hash")
source = st.selectbox("Source", ["auto", "raw", "processed"])
overwrite = st.checkbox("Overwrite existing files")

if st.button("Download", type="primary", disabled=recording is None):
    status = st.status("Downloading session…", expanded=True)
    bar = st.progress(0.0)
    try:
        results = data.query(recording_hash=recording)
        paths = data.download(
            results,
            dest=DEST,
            source=source,
            overwrite=overwrite,
            progress=streamlit_progress(status, bar),  # refreshes every 0.1 s by itself
        )
    except ERRORS as e:
        status.update(label="Download failed", state="error")
        st.error(f"{type(e).__name__}: {e}")
    else:
        root = DEST / recording  # the default by_recording layout
        st.success(f"{len(paths):,} files landed under {root}")
        shown = [str(p.relative_to(root)) for p in paths[:10]]
        more = [f"… and {len(paths) - len(shown):,} more"] if len(paths) > len(shown) else []
        st.code("\n".join(shown + more), language=None)
