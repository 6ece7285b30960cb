//! The simulated network server (work in progress).
