//! Source rules in the style of rust-analyzer's tidy: things a reviewer would otherwise have
//! to catch by eye. (automix-core's no-IO rule lives in its own tests.)

use std::path::{Path, PathBuf};

/// Library and binary sources of our crates, without their `#[cfg(test)]` tails.
fn sources() -> Vec<(PathBuf, String)> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    for krate in ["automix", "automix-cli", "automix-core"] {
        let src = crates.join(krate).join("src");
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("").to_owned();
            out.push((path, code));
        }
    }
    assert!(out.len() > 20, "found only {} source files", out.len());
    out
}

fn offending(rule: impl Fn(&str) -> bool) -> Vec<String> {
    sources()
        .into_iter()
        .flat_map(|(path, code)| {
            code.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim_start().starts_with("//") && rule(l))
                .map(|(i, l)| format!("{}:{}: {}", path.display(), i + 1, l.trim()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A poisoned lock must not silently skip an update (`crate::sync::lock` recovers it).
#[test]
fn no_lock_result_is_dropped() {
    let bad =
        offending(|l| l.contains(".lock()") && (l.contains(".ok()") || l.contains("if let Ok")));
    assert!(bad.is_empty(), "use sync::lock:\n{}", bad.join("\n"));
}

/// The verdict cut is `automix_core::VERDICT_CUT`, not a literal in each place that cuts.
#[test]
fn no_bare_verdict_cut() {
    let bad = offending(|l| l.contains(">= 0.5") || l.contains("< 0.5"));
    assert!(bad.is_empty(), "use VERDICT_CUT:\n{}", bad.join("\n"));
}
