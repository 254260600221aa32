//! Devices. Being written.
