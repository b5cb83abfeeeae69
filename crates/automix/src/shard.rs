//! Batch work split across machines: a deterministic slice of the queries per shard, and the
//! merge of the shards' row files back into one (checking for duplicates and gaps).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::dataset::{QueryRow, TrainingRow, read_training_rows};
use crate::error::{AutomixError, Result};

/// Shard `index` of `count` (`--shard I/N`, 1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1..=count.
    pub index: usize,
    /// Shards in all.
    pub count: usize,
}

impl Shard {
    /// Parses `I/N` with 1 ≤ I ≤ N.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || AutomixError::Setting {
            key: "--shard",
            message: format!("{text:?} is not I/N with 1 <= I <= N (e.g. 2/4)"),
        };
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if count == 0 || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }

    /// Whether query `id` belongs to this shard: by a stable hash of the id, so every
    /// machine computes the same slices whatever the file order.
    pub fn contains(&self, id: &str) -> bool {
        let h = crate::dataset::fnv1a(id.as_bytes());
        (h % self.count as u64) as usize == self.index - 1
    }

    /// The queries of this shard, in their order.
    pub fn select(&self, queries: Vec<QueryRow>) -> Vec<QueryRow> {
        queries
            .into_iter()
            .filter(|q| self.contains(&q.id))
            .collect()
    }
}

/// Merges the row files of shards: every id once (a duplicate is an error naming both
/// files), and, given the expected queries, every one present (missing ids are an error).
/// Rows come out in the order of `expected` when given, else by id.
pub fn merge_rows(files: &[PathBuf], expected: Option<&[QueryRow]>) -> Result<Vec<TrainingRow>> {
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    let mut rows = Vec::new();
    for file in files {
        for row in read_training_rows(file)? {
            if let Some(first) = seen.insert(row.id.clone(), file.clone()) {
                return Err(AutomixError::InsufficientRows(format!(
                    "row {} is in both {} and {}: shards overlap",
                    row.id,
                    first.display(),
                    file.display()
                )));
            }
            rows.push(row);
        }
    }
    match expected {
        Some(queries) => {
            let missing: Vec<&str> = queries
                .iter()
                .map(|q| q.id.as_str())
                .filter(|id| !seen.contains_key(*id))
                .collect();
            if !missing.is_empty() {
                return Err(AutomixError::InsufficientRows(format!(
                    "{} of {} queries have no row in the shards (first: {}); collect the \
                     missing shard or rerun it to resume",
                    missing.len(),
                    queries.len(),
                    missing
                        .iter()
                        .take(3)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            let wanted: HashSet<&str> = queries.iter().map(|q| q.id.as_str()).collect();
            let order: HashMap<&str, usize> = queries
                .iter()
                .enumerate()
                .map(|(i, q)| (q.id.as_str(), i))
                .collect();
            rows.retain(|r| wanted.contains(r.id.as_str()));
            rows.sort_by_key(|r| order.get(r.id.as_str()).copied().unwrap_or(usize::MAX));
        }
        None => rows.sort_by(|a, b| a.id.cmp(&b.id)),
    }
    Ok(rows)
}

/// `out.jsonl` → `out.shard-2-of-4.jsonl`: the default output of a shard.
pub fn shard_path(path: &Path, shard: Shard) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let ext = path
        .extension()
        .map_or_else(String::new, |e| format!(".{}", e.to_string_lossy()));
    path.with_file_name(format!(
        "{stem}.shard-{}-of-{}{ext}",
        shard.index, shard.count
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_ids() {
        let shards: Vec<Shard> = (1..=3)
            .map(|i| Shard::parse(&format!("{i}/3")).unwrap())
            .collect();
        for id in ["a", "b", "mmlu-17", "x y z"] {
            assert_eq!(shards.iter().filter(|s| s.contains(id)).count(), 1, "{id}");
        }
        for bad in ["0/3", "4/3", "1/0", "two/3", "3"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        let p = shard_path(Path::new("out/rows.jsonl"), shards[1]);
        assert_eq!(p, Path::new("out/rows.shard-2-of-3.jsonl"));
    }
}
