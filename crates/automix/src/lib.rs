//! The AutoMix router runtime: config, llm_data, datasets, task metrics, `Router`,
//! the collect pipeline and evaluation reports. Built by issue #5; it re-exports the
//! decision core until then.
pub use automix_core as core;
