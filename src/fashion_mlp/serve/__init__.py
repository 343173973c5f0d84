"""Serving: the Open Inference Protocol over HTTP (app.py, protocol.py) and a page (static/index.html)."""
