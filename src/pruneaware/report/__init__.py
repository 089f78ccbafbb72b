"""Reports of a finished run: a markdown file, plots, and a table on the terminal."""
