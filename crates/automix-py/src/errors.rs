//! Python exceptions for the runtime's errors: one class per kind, all under
//! `AutomixError`, each carrying the library's message (file, line and field where there
//! is one).

use pyo3::prelude::*;
use pyo3::{PyErr, create_exception};

create_exception!(
    automix_rs,
    AutomixError,
    pyo3::exceptions::PyException,
    "Any automix-rs error."
);
create_exception!(
    automix_rs,
    ConfigError,
    AutomixError,
    "The YAML config, a setting or an argument is wrong (the message names the file, line and key)."
);
create_exception!(
    automix_rs,
    DataError,
    AutomixError,
    "A data file, a row or a query is malformed or missing (the message names the file, line and field)."
);
create_exception!(
    automix_rs,
    PolicyError,
    AutomixError,
    "The policy cannot be trained or cannot route with these settings or models."
);
create_exception!(
    automix_rs,
    UpstreamError,
    AutomixError,
    "A model call failed (after the retries that were safe)."
);

/// Adds the exception classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("AutomixError", py.get_type::<AutomixError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("DataError", py.get_type::<DataError>())?;
    m.add("PolicyError", py.get_type::<PolicyError>())?;
    m.add("UpstreamError", py.get_type::<UpstreamError>())?;
    Ok(())
}

/// The Python exception of a runtime error.
pub(crate) fn to_py(e: automix::AutomixError) -> PyErr {
    use automix::AutomixError as E;
    let message = e.to_string();
    match e {
        E::Config { .. } | E::Setting { .. } | E::UnknownMetric { .. } | E::Template(_) => {
            ConfigError::new_err(message)
        }
        E::Data { .. }
        | E::Io { .. }
        | E::InsufficientRows(_)
        | E::MissingRun { .. }
        | E::Catalogue(_)
        | E::Serialise { .. } => DataError::new_err(message),
        E::Model { .. } => UpstreamError::new_err(message),
        E::PolicyUnusable { .. } | E::Core(_) | E::TooFewModels { .. } | E::UnknownModel { .. } => {
            PolicyError::new_err(message)
        }
        _ => AutomixError::new_err(message),
    }
}
