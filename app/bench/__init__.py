"""``edgewise bench``: benchmarks that print figures side by side."""
