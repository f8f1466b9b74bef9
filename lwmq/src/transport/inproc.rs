//! inproc
