//! Load generator (filled in by the load-generator work).
