"""Streamlit helpers shared by the pages (session state, cached loaders, small widgets). Logic lives in core/."""
