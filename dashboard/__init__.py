"""WeLore Studio dashboard: Streamlit pages that only call welore_core's public API."""
