//! Source rules in the style of rust-analyzer's tidy, over every crate's `src` (and
//! xtask's): things a reviewer would otherwise have to catch by eye. (automix-core's no-IO
//! rule lives in its own tests.) And the crate graph: who may depend on whom.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Library and binary sources of every crate and of xtask, without their `#[cfg(test)]`
/// tails.
fn sources() -> Vec<(PathBuf, String)> {
    let root = workspace();
    let mut dirs = vec![root.join("xtask/src")];
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        dirs.push(entry.unwrap().path().join("src"));
    }
    let mut files = Vec::new();
    for dir in dirs {
        rust_files(&dir, &mut files);
    }
    let out: Vec<_> = files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("").to_owned();
            (path, code)
        })
        .collect();
    let crates = [
        "automix/",
        "automix-cli/",
        "automix-core/",
        "automix-llm/",
        "automix-serve/",
    ];
    for c in crates.iter().chain(&["automix-verify/", "xtask/"]) {
        assert!(
            out.iter().any(|(p, _)| p.to_string_lossy().contains(c)),
            "no sources of {c} found"
        );
    }
    assert!(out.len() > 60, "found only {} source files", out.len());
    out
}

/// The code of `text` without comments, whitespace removed (so a rule sees a call chain
/// split over lines as one).
fn squeezed(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect()
}

/// Where `code` (squeezed) drops the result of a `.lock()`, `.read()` or `.write()`:
/// `.ok()`, `.map(…)`/`.unwrap_or…` on it, or `if let Ok(…) = ….lock()`.
fn dropped_lock_results(code: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for call in [".lock()", ".read()", ".write()"] {
        for (at, _) in code.match_indices(call) {
            let after = &code[at + call.len()..];
            let before = &code[..at];
            let statement = before.rsplit([';', '{', '}']).next().unwrap_or("");
            let recovers = after.starts_with(".unwrap_or_else(PoisonError::into_inner)");
            let skips = [".ok()", ".map(", ".unwrap_or"]
                .iter()
                .any(|p| after.starts_with(p));
            let skips = skips && !recovers;
            if skips || statement.starts_with("ifletOk(") || statement.starts_with("whileletOk(") {
                let from = at.saturating_sub(60);
                bad.push(code[from..(at + call.len() + 12).min(code.len())].to_owned());
            }
        }
    }
    bad
}

/// A poisoned lock must not silently skip an update (`sync::lock`, `read`, `write` recover
/// it), in any crate.
#[test]
fn no_lock_result_is_dropped() {
    let bad: Vec<String> = sources()
        .iter()
        .flat_map(|(path, code)| {
            dropped_lock_results(&squeezed(code))
                .into_iter()
                .map(move |b| format!("{}: …{b}…", path.display()))
        })
        .collect();
    assert!(bad.is_empty(), "use automix_llm::sync:\n{}", bad.join("\n"));
}

#[test]
fn the_lock_rule_sees_split_chains() {
    for bad in [
        "self.queue\n.lock()\n.ok()",
        "if let Ok(mut r) = self.router.write() {",
        "m.read().map(|r| r.len())",
    ] {
        assert_eq!(dropped_lock_results(&squeezed(bad)).len(), 1, "{bad}");
    }
    assert!(dropped_lock_results(&squeezed("lock(&self.queue).pop_front();")).is_empty());
}

/// The verdict cut is `automix_core::VERDICT_CUT`, not a literal in each place that cuts.
#[test]
fn no_bare_verdict_cut() {
    let bad: Vec<String> = sources()
        .iter()
        .flat_map(|(path, code)| {
            code.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim_start().starts_with("//"))
                .filter(|(_, l)| l.contains(">= 0.5") || l.contains("< 0.5"))
                .map(|(i, l)| format!("{}:{}: {}", path.display(), i + 1, l.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(bad.is_empty(), "use VERDICT_CUT:\n{}", bad.join("\n"));
}

/// No non-test source file over 900 lines, no non-test function over 100: one concept per
/// file, functions that fit on a screen.
#[test]
fn files_and_functions_stay_small() {
    let mut bad = Vec::new();
    for (path, code) in sources() {
        let lines = code.lines().count();
        if lines > 900 {
            bad.push(format!("{}: {lines} lines", path.display()));
        }
        for (name, len) in function_lengths(&code) {
            if len > 100 {
                bad.push(format!("{}: fn {name} is {len} lines", path.display()));
            }
        }
    }
    assert!(bad.is_empty(), "too large:\n{}", bad.join("\n"));
}

/// Each `fn`'s name and its length in lines, from its signature to the line of its closing
/// brace at the same indentation.
fn function_lengths(code: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let Some(rest) = [
            "fn ",
            "pub fn ",
            "pub(crate) fn ",
            "async fn ",
            "pub async fn ",
            "pub(crate) async fn ",
        ]
        .iter()
        .find_map(|p| trimmed.strip_prefix(p)) else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let close = " ".repeat(indent) + "}";
        let end = lines[i..]
            .iter()
            .position(|l| *l == close || (l.ends_with(';') && l.trim_start().starts_with("fn ")))
            .map_or(0, |n| n + 1);
        out.push((name, end));
    }
    out
}

/// The crate graph, from `cargo metadata`: each crate depends (normally) only on ours below
/// it, and only automix-serve (and the CLI through it) on axum or hyper; automix-llm's
/// opt-in `test-support` feature (its fake upstream) is the one exception, optional and off
/// in every library build.
#[test]
fn crates_depend_only_downward() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--offline",
            "--no-deps",
            "--format-version",
            "1",
        ])
        .current_dir(workspace())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let allowed: &[(&str, &[&str])] = &[
        ("automix-core", &[]),
        ("automix-llm", &["automix-core"]),
        ("automix-verify", &["automix-core", "automix-llm"]),
        (
            "automix",
            &["automix-core", "automix-llm", "automix-verify"],
        ),
        ("automix-serve", &["automix", "automix-llm"]),
        ("automix-cli", &["automix", "automix-serve"]),
    ];
    let http_servers = ["axum", "hyper", "hyper-util", "tower"];
    for package in meta["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        let Some((_, ours)) = allowed.iter().find(|(n, _)| *n == name) else {
            continue;
        };
        for dep in package["dependencies"].as_array().unwrap() {
            let dep_name = dep["name"].as_str().unwrap();
            let normal = dep["kind"].is_null();
            let optional = dep["optional"].as_bool().unwrap_or(false);
            if normal && dep_name.starts_with("automix") {
                assert!(
                    ours.contains(&dep_name),
                    "{name} must not depend on {dep_name}"
                );
            }
            if normal && http_servers.contains(&dep_name) {
                let exception = name == "automix-llm" && optional;
                assert!(
                    name == "automix-serve" || exception,
                    "{name} depends on {dep_name}: only automix-serve may"
                );
            }
        }
    }
}

/// ARCHITECTURE.md's code map names every module: each source file of a crate (or xtask) is
/// named in that crate's section, a folder's `mod.rs` by the folder.
#[test]
fn architecture_names_every_module() {
    let root = workspace();
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut crates: Vec<(String, PathBuf)> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                format!("### `crates/{}`", p.file_name().unwrap().to_string_lossy()),
                p,
            )
        })
        .collect();
    crates.push(("### `xtask`".into(), root.join("xtask")));
    let mut missing = Vec::new();
    for (heading, dir) in crates {
        let Some(start) = map.find(&heading) else {
            missing.push(format!("no section {heading}"));
            continue;
        };
        let rest = &map[start + heading.len()..];
        let section = &rest[..rest
            .find("\n### ")
            .or(rest.find("\n## "))
            .unwrap_or(rest.len())];
        let src = dir.join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        for file in files {
            let rel = file
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let named = match rel.strip_suffix("mod.rs") {
                Some(folder) => section.contains(&format!("`{folder}`")),
                None => {
                    let name = rel.rsplit('/').next().unwrap_or(&rel);
                    section.contains(&format!("`{name}`")) || section.contains(&format!("`{rel}`"))
                }
            };
            if !named {
                missing.push(format!("{heading}: {rel}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md does not name:\n{}",
        missing.join("\n")
    );
}
