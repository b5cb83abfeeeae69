//! `automix_rs`: automix-rs from Python, with LLMRouter's `AutomixRouter` /
//! `AutomixTrainer` API. Every call goes to the same library the CLI and the proxy use
//! ([`automix::project`], [`automix::router::Router`], [`automix::training`]): this crate
//! converts values and errors, releases the GIL while routing, and cancels a batch on
//! Ctrl-C; it decides nothing itself.

mod convert;
mod errors;
mod policy;
mod router;

use std::sync::OnceLock;

use pyo3::prelude::*;

/// The module's one Tokio runtime, made on first use. Python loads an extension module once
/// per process and every router in it shares the runtime, so this is process state by
/// nature (as the interpreter's own is), not a convenience global.
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("automix-rs")
        .build()
        .map_err(|e| errors::AutomixError::new_err(format!("cannot start the runtime: {e}")))?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// The native module (imported by the `automix_rs` package).
#[pymodule]
fn _automix_rs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<router::AutomixRouter>()?;
    m.add_class::<router::AutomixTrainer>()?;
    m.add_class::<policy::Policy>()?;
    m.add_function(wrap_pyfunction!(policy::train_policy, m)?)?;
    m.add_function(wrap_pyfunction!(policy::evaluate_rows, m)?)?;
    m.add_function(wrap_pyfunction!(policy::compare_signals, m)?)?;
    errors::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
