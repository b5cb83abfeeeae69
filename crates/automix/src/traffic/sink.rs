//! Where shadow rows go: a JSONL file on this machine, or a Redis stream that every replica
//! of a deployment appends to and `automix traffic export` drains into a file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::dataset::{TrainingRow, read_training_rows, settle_feedback};
use crate::error::{AutomixError, Result};
use crate::redis_conn::RedisConn;
use crate::sync::lock;

/// The stream key rows go to when `automix.shadow.rows_stream` is not set.
pub const DEFAULT_STREAM: &str = "automix:traffic:rows";

/// Rows a stream keeps at most (older ones are trimmed by Redis, approximately): about
/// 150 MB of rows without text. Export more often than that many rows arrive.
pub const STREAM_MAX_ROWS: usize = 100_000;

/// Entries read per Redis call when reading or draining a stream.
const PAGE: usize = 500;

/// Where the rows of a shadow are appended.
#[derive(Debug)]
pub enum RowSink {
    /// A JSONL file, appended and flushed row by row.
    File {
        /// Its path.
        path: PathBuf,
        /// The open file.
        file: Mutex<std::fs::File>,
    },
    /// A Redis stream shared by replicas.
    Stream(Box<RowStream>),
}

impl RowSink {
    /// A file sink at `path` (created with its folder if missing).
    pub fn file(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| AutomixError::io(dir, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| AutomixError::io(path, e))?;
        Ok(Self::File {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    /// Appends one row (one JSON line).
    pub async fn append(&self, row: &TrainingRow) -> Result<()> {
        let line = serde_json::to_string(row).map_err(|e| AutomixError::Setting {
            key: "automix.shadow",
            message: format!("a row did not serialise: {e}"),
        })?;
        match self {
            Self::File { path, file } => {
                let mut f = lock(file);
                writeln!(f, "{line}")
                    .and_then(|()| f.flush())
                    .map_err(|e| AutomixError::io(path, e))
            }
            Self::Stream(s) => s.add(&line).await,
        }
    }

    /// Every row appended so far (feedback corrections applied): what a retrain reads.
    pub async fn rows(&self) -> Result<Vec<TrainingRow>> {
        match self {
            Self::File { path, .. } => read_training_rows(path),
            Self::Stream(s) => s.rows().await,
        }
    }

    /// Where the rows go, for logs (a stream's key, never the Redis URL).
    pub fn describe(&self) -> String {
        match self {
            Self::File { path, .. } => path.display().to_string(),
            Self::Stream(s) => format!("redis stream {}", s.key),
        }
    }
}

/// A Redis stream of rows: each entry holds one row's JSON in its `row` field.
#[derive(Debug)]
pub struct RowStream {
    conn: RedisConn,
    key: String,
}

impl RowStream {
    /// The stream `key` over `conn`.
    pub fn new(conn: RedisConn, key: &str) -> Self {
        Self {
            conn,
            key: key.to_owned(),
        }
    }

    /// The stream's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    fn failed(&self, e: impl std::fmt::Display) -> AutomixError {
        AutomixError::Setting {
            key: "automix.shadow.rows_stream",
            message: format!("redis stream {}: {e}", self.key),
        }
    }

    /// `XADD key MAXLEN ~ STREAM_MAX_ROWS * row <line>`.
    async fn add(&self, line: &str) -> Result<()> {
        let key = self.key.clone();
        self.conn
            .run(async |mut c| {
                redis::cmd("XADD")
                    .arg(&key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(STREAM_MAX_ROWS)
                    .arg("*")
                    .arg("row")
                    .arg(line)
                    .query_async::<String>(&mut c)
                    .await
            })
            .await
            .map(drop)
            .map_err(|e| self.failed(e))
    }

    /// Up to [`PAGE`] entries after `after` (exclusive; `-` for the start), as (id, line).
    async fn page(&self, after: &str) -> Result<Vec<(String, String)>> {
        let (key, start) = (self.key.clone(), exclusive(after));
        let entries: Vec<(String, Vec<(String, String)>)> = self
            .conn
            .run(async |mut c| {
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(PAGE)
                    .query_async(&mut c)
                    .await
            })
            .await
            .map_err(|e| self.failed(e))?;
        entries
            .into_iter()
            .map(|(id, fields)| {
                let line = fields.into_iter().find(|(f, _)| f == "row").map(|(_, v)| v);
                line.map(|l| (id.clone(), l))
                    .ok_or_else(|| self.failed(format!("entry {id} has no `row` field")))
            })
            .collect()
    }

    /// Every entry, in order, as (id, line).
    async fn entries(&self) -> Result<Vec<(String, String)>> {
        let mut all = Vec::new();
        let mut after = "-".to_owned();
        loop {
            let page = self.page(&after).await?;
            let Some((last, _)) = page.last() else {
                return Ok(all);
            };
            after = last.clone();
            let full = page.len() == PAGE;
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }

    /// Every row in the stream (feedback corrections applied).
    pub async fn rows(&self) -> Result<Vec<TrainingRow>> {
        let entries = self.entries().await?;
        let rows = entries
            .iter()
            .map(|(id, line)| {
                serde_json::from_str(line).map_err(|e| self.failed(format!("entry {id}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(settle_feedback(rows))
    }

    /// Appends every row in the stream to `out` (JSONL, flushed and synced) and then, unless
    /// `keep`, deletes exactly the entries written: rows that arrive meanwhile stay for the
    /// next export. At least once: an export that fails after writing and before deleting
    /// writes those rows again next time (a feedback correction settles either way).
    pub async fn export(&self, out: &Path, keep: bool) -> Result<usize> {
        let entries = self.entries().await?;
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| AutomixError::io(dir, e))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .map_err(|e| AutomixError::io(out, e))?;
        for (_, line) in &entries {
            writeln!(file, "{line}").map_err(|e| AutomixError::io(out, e))?;
        }
        file.sync_all().map_err(|e| AutomixError::io(out, e))?;
        if !keep {
            for chunk in entries.chunks(PAGE) {
                self.delete(chunk.iter().map(|(id, _)| id.as_str())).await?;
            }
        }
        Ok(entries.len())
    }

    async fn delete(&self, ids: impl Iterator<Item = &str>) -> Result<()> {
        let mut cmd = redis::cmd("XDEL");
        cmd.arg(&self.key);
        for id in ids {
            cmd.arg(id);
        }
        self.conn
            .run(async |mut c| cmd.query_async::<u64>(&mut c).await)
            .await
            .map(drop)
            .map_err(|e| self.failed(e))
    }
}

/// The XRANGE start just after entry `id` (`-`: the stream's start).
fn exclusive(id: &str) -> String {
    if id == "-" {
        id.to_owned()
    } else {
        format!("({id}")
    }
}
