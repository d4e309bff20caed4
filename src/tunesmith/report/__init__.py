"""report.html (the web app's Eval page as one file), the promotion verdict, loss plots."""
