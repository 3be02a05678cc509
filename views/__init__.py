"""The Streamlit pages (run by app.py's router) and their shared UI helpers (views.ui).
"""
