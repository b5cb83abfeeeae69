//! Locks that survive a panic elsewhere: the helpers live in `automix-llm` (the lowest crate
//! that locks) and are re-exported here for the runtime and the proxy.

pub use automix_llm::sync::{lock, read, write};
