"""The embedded default: demo data and models that need nothing downloaded."""
