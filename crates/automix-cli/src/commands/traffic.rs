//! `automix traffic export`: drain the shadow rows replicas append to a Redis stream into a
//! JSONL file that `automix train --rows` reads.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use automix::config::Config;
use automix::traffic::RowsTarget;

/// `automix traffic …`.
#[derive(Args, Debug)]
pub struct TrafficArgs {
    #[command(subcommand)]
    command: TrafficCommand,
}

#[derive(Subcommand, Debug)]
enum TrafficCommand {
    /// Append every row of the shadow's Redis stream to a JSONL file, then delete those
    /// entries from the stream (at least once: rows arriving meanwhile stay for next time).
    Export {
        /// The rows JSONL (appended; created with its folder).
        #[arg(long)]
        out: PathBuf,
        /// Copy without deleting from the stream.
        #[arg(long)]
        keep: bool,
    },
}

/// Runs `automix traffic …`.
pub(crate) async fn traffic(config: &Config, json: bool, args: &TrafficArgs) -> Result<()> {
    let TrafficCommand::Export { out, keep } = &args.command;
    let Some(settings) = config.automix.shadow.as_ref() else {
        bail!("the config has no automix.shadow block: there are no shadow rows to export");
    };
    let key = match settings.target(&config.automix.belief_store)? {
        RowsTarget::Stream(key) => key,
        RowsTarget::File(path) => bail!(
            "shadow rows go to the file {} (automix.shadow.rows_path), not a Redis stream: \
             train on that file directly",
            path.display()
        ),
    };
    let stream = automix::project::row_stream(config, &key)?;
    let n = stream.export(out, *keep).await?;
    if json {
        let body = serde_json::json!({"rows": n, "out": out, "stream": key, "kept": keep});
        println!("{body}");
    } else {
        let what = if *keep { "copied" } else { "moved" };
        println!(
            "{what} {n} rows from redis stream {key} to {}",
            out.display()
        );
    }
    Ok(())
}
