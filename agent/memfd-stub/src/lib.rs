//! Intentionally empty: see agent/Cargo.toml.
#![no_std]
