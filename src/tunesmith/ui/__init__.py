"""`tunesmith ui`: a local web app over run directories and the registry (see app.py)."""
