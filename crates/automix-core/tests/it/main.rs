//! Integration tests of automix-core (one binary, ripgrep style).

mod parity;
mod properties;
