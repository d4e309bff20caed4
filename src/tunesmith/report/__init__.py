"""HTML reports: data, loss curves, eval side by side, costs."""
