//! Integration tests of automix-core (one binary, ripgrep style).

#![allow(clippy::unwrap_used)]

mod architecture;
mod cascade;
mod parity;
mod properties;
