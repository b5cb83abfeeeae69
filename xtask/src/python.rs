//! Python virtual environments under `.cache/`, with pinned packages from PyPI.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::run;

/// The paper's code and the exact library versions the golden fixtures were made with.
const PARITY_PACKAGES: &[&str] = &[
    "automix-llm==1.0.3",
    "numpy==2.4.6",
    "pandas==3.1.1",
    "scipy==1.17.1",
    "tqdm==4.70.1",
];

/// Creates (once) `.cache/venv-parity` and returns its interpreter.
pub fn parity_venv(root: &Path) -> Result<PathBuf> {
    venv(root, "venv-parity", PARITY_PACKAGES)
}

/// The official OpenAI Python SDK, for the e2e test that drives `automix serve` with it.
const OPENAI_PACKAGES: &[&str] = &["openai==3.54.0"];

/// Creates (once) `.cache/venv-openai` and returns its interpreter.
pub fn openai_venv(root: &Path) -> Result<PathBuf> {
    venv(root, "venv-openai", OPENAI_PACKAGES)
}

/// Creates `.cache/<name>` with `packages` installed, unless its marker says they already are.
pub fn venv(root: &Path, name: &str, packages: &[&str]) -> Result<PathBuf> {
    let dir = root.join(".cache").join(name);
    let py = dir.join("bin/python");
    let marker = dir.join(".installed");
    let wanted = packages.join("\n");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) && py.exists() {
        return Ok(py);
    }
    std::fs::create_dir_all(root.join(".cache"))?;
    create(&dir)?;
    pip_install(&py, packages)?;
    std::fs::write(&marker, wanted)?;
    Ok(py)
}

/// `python3 -m venv dir`; its interpreter.
pub fn create(dir: &Path) -> Result<PathBuf> {
    run(Command::new("python3").args(["-m", "venv"]).arg(dir))?;
    Ok(dir.join("bin/python"))
}

/// `pip install` of `packages` (names, paths or wheel files) into the venv of `py`.
pub fn pip_install(py: &Path, packages: &[&str]) -> Result<()> {
    run(Command::new(py)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(packages))
}
