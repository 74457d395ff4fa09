"""The roof: the Faust app factory, the runner, views, the transport and the demo's wiring."""
