//! The Python package (`crates/automix-py`, import name `automix_rs`): `cargo xtask wheel`
//! builds the abi3 wheel with a pinned maturin; `cargo xtask pytest` checks both ways a
//! user installs it (pip from the clone, and the built wheel file, each into a fresh venv)
//! and runs the pytest suite against the scripted upstream.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{python, run};

/// The build backend, pinned (pyproject.toml accepts `maturin>=1.16,<2`).
const MATURIN: &str = "maturin==1.16.0";

/// The test runner, pinned.
const PYTEST: &str = "pytest==8.3.4";

/// `cargo xtask wheel`: `target/wheels/automix_rs-<version>-cp39-abi3-<platform>.whl`.
pub(crate) fn build(root: &Path) -> Result<PathBuf> {
    let py = python::venv(root, "venv-maturin", &[MATURIN])?;
    let out = root.join("target/wheels");
    let _ = std::fs::remove_dir_all(&out);
    run(Command::new(&py)
        .current_dir(root)
        .args(["-m", "maturin", "build", "--release", "--manifest-path"])
        .arg("crates/automix-py/Cargo.toml")
        .arg("--out")
        .arg(&out))?;
    let wheel = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .context("maturin wrote no wheel")?;
    eprintln!("wheel: {}", wheel.display());
    Ok(wheel)
}

/// A new, empty venv at `dir` (removed first); its interpreter.
fn fresh_venv(dir: &Path) -> Result<PathBuf> {
    let _ = std::fs::remove_dir_all(dir);
    python::create(dir)
}

/// A fresh venv with the package pip-installed from the clone (as the README says) and
/// pytest; also builds the release `automix` binary the suite compares with. Its interpreter.
pub(crate) fn source_venv(root: &Path) -> Result<PathBuf> {
    crate::build_release(root)?;
    let py = fresh_venv(&root.join("target/py-venv-source"))?;
    let package = root.join("crates/automix-py");
    python::pip_install(&py, &[package.to_str().context("a UTF-8 path")?, PYTEST])?;
    Ok(py)
}

/// pytest on `paths` with `py`, told where the workspace and the `automix` binary are.
pub(crate) fn suite(root: &Path, py: &Path, paths: &[&str]) -> Command {
    let mut cmd = Command::new(py);
    cmd.current_dir(root)
        .env("AUTOMIX_ROOT", root)
        .env("AUTOMIX_BIN", root.join("target/release/automix"))
        .args(["-m", "pytest", "-q", "-s"])
        .args(paths);
    cmd
}

/// `cargo xtask pytest`: pip-installs the package from the clone into a fresh venv (the
/// README's path) and runs the suite there; then installs the built wheel file into
/// another fresh venv and imports it.
pub(crate) fn pytest(root: &Path) -> Result<()> {
    let from_source = source_venv(root)?;
    run(&mut suite(root, &from_source, &["crates/automix-py/tests"]))?;
    let wheel = build(root)?;
    let from_wheel = fresh_venv(&root.join("target/py-venv-wheel"))?;
    python::pip_install(&from_wheel, &[wheel.to_str().context("a UTF-8 path")?])?;
    let out = Command::new(&from_wheel)
        .args([
            "-c",
            "import automix_rs; print(automix_rs.__version__, automix_rs.AutomixRouter)",
        ])
        .output()?;
    if !out.status.success() {
        bail!(
            "the installed wheel does not import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!(
        "the wheel installs and imports: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(())
}
