//! Python values to and from the library's types, through JSON: Python's own `json` module
//! turns dicts into text and back, serde does the rest, so a result has exactly the keys
//! `automix --json route` prints.

use pyo3::prelude::*;
use serde_json::Value;

use automix::dataset::{QueryRow, TrainingRow, query_from_json};

use crate::errors::DataError;

/// `obj` as JSON (anything `json.dumps` takes).
pub(crate) fn to_json(py: Python<'_>, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Value> {
    let text: String = py
        .import("json")?
        .call_method1("dumps", (obj,))
        .map_err(|e| DataError::new_err(format!("{what} is not JSON-serialisable: {e}")))?
        .extract()?;
    serde_json::from_str(&text).map_err(|e| DataError::new_err(format!("{what}: {e}")))
}

/// `value` as Python objects (dicts, lists, numbers, strings, None).
pub(crate) fn to_py<'py>(
    py: Python<'py>,
    value: &impl serde::Serialize,
) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value)
        .map_err(|e| crate::errors::AutomixError::new_err(format!("cannot serialise: {e}")))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// A query dict (LLMRouter's keys: `query`, and optionally `task_name`, `ground_truth`,
/// `metric`, `choices`, `context`) as a query row; `task` fills a missing `task_name`. The
/// error names the query's position.
pub(crate) fn query(mut value: Value, task: &str, position: usize) -> PyResult<QueryRow> {
    let Some(object) = value.as_object_mut() else {
        return Err(DataError::new_err(format!(
            "query {position}: expected a dict such as {{\"query\": \"...\"}}"
        )));
    };
    object
        .entry("task_name")
        .or_insert_with(|| Value::String(task.to_owned()));
    // The id is the library's (a hash of task and text), as `automix route` gives it.
    query_from_json(&value).map_err(|e| DataError::new_err(format!("query {position}: {e}")))
}

/// Training rows (the project's row format) from an iterable of dicts; the error names the
/// row's position and the field.
pub(crate) fn training_rows(py: Python<'_>, rows: &Bound<'_, PyAny>) -> PyResult<Vec<TrainingRow>> {
    let mut out = Vec::new();
    for (i, item) in rows.try_iter()?.enumerate() {
        let value = to_json(py, &item?, &format!("row {}", i + 1))?;
        out.push(
            serde_json::from_value(value)
                .map_err(|e| DataError::new_err(format!("row {}: {e}", i + 1)))?,
        );
    }
    Ok(out)
}
