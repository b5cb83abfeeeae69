//! Integration tests of automix-core (one binary, ripgrep style).

mod architecture;
mod parity;
mod properties;
