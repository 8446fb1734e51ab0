//! The `hearth` command line: serve, init, validate, translate, audit, backup, token.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::clock::SystemClock;
use crate::config::{self, Config};
use crate::fhir::{Profiles, outcome};
use crate::mapping::Mappings;
use crate::store::sqlite::{DB_FILE, SqliteStore};

#[derive(Debug, Parser)]
#[command(
    name = "hearth",
    version,
    about = "FHIR R4 gateway for minimum-necessary housing–health data sharing"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway. Without --config, uses (or creates) hearth-data/hearth.toml.
    Serve {
        #[arg(long, env = "HEARTH_CONFIG")]
        config: Option<PathBuf>,
        /// Overrides `listen` from the config.
        #[arg(long, env = "HEARTH_LISTEN")]
        listen: Option<SocketAddr>,
        /// Overrides `data_dir` from the config.
        #[arg(long, env = "HEARTH_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Write a commented config with fresh credentials for a sample clinic, MCO,
    /// housing worker and auditor into DIR.
    Init {
        dir: PathBuf,
        /// Print the config path and each principal's id, org, role and token as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a FHIR resource against Hearth's profiles; prints the OperationOutcome the
    /// API would answer. Exit status 1 when it is not acceptable.
    Validate {
        file: PathBuf,
        #[arg(long, default_value = "profiles")]
        profiles: PathBuf,
    },
    /// Dry run: the dataset items a resource becomes and the paths that would be dropped.
    /// Touches no store.
    Translate {
        file: PathBuf,
        #[arg(long, default_value = "mappings")]
        mappings: PathBuf,
    },
    /// Copy the store to FILE as one consistent snapshot, safe beside a running server
    /// (copying hearth.db alone misses what is still in its write-ahead log), then verify
    /// the copy's audit chain. FILE must not exist.
    Backup {
        #[command(flatten)]
        store: StoreArgs,
        file: PathBuf,
    },
    /// A fresh bearer token for a new principal (e.g. to rotate one): prints the token,
    /// once, and the `[[principals]]` entry with its hash to add to the config. Touches
    /// no file; the server reads the config at start-up.
    Token {
        /// The new principal's id (unique in the config).
        id: String,
        /// The partner id of its organisation.
        #[arg(long)]
        org: String,
        #[arg(long, value_enum)]
        role: crate::auth::Role,
    },
    /// Inspect the audit trail (works beside a running server).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain; report the first broken link. Exit status 1 if broken.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// A head hash kept elsewhere earlier: prove the log still contains it.
        #[arg(long)]
        anchor: Option<String>,
    },
    /// Print the latest record's sequence number and hash, to keep somewhere safe.
    Head {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Write every record to stdout: JSON lines (with seq and hash), CSV, or FHIR
    /// AuditEvent resources (IHE BALP shape) as a collection Bundle.
    Export {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
    AuditEvent,
}

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Read the data directory from this config.
    #[arg(long, env = "HEARTH_CONFIG")]
    config: Option<PathBuf>,
    /// The data directory (default: from the config, else hearth-data).
    #[arg(long, env = "HEARTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl StoreArgs {
    fn db_path(&self) -> anyhow::Result<PathBuf> {
        let dir = match (&self.data_dir, &self.config) {
            (Some(d), _) => d.clone(),
            (None, Some(c)) => Config::load(c)?.data_dir,
            (None, None) => PathBuf::from(crate::config::DEFAULT_DATA_DIR),
        };
        let path = dir.join(DB_FILE);
        if !path.exists() {
            bail!("no store at {}", path.display());
        }
        Ok(path)
    }
}

/// Where `hearth serve` keeps its generated config when given none.
const DEFAULT_DIR: &str = crate::config::DEFAULT_DATA_DIR;

/// Runs a command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
        } => {
            let mut config = match config {
                Some(path) => Config::load(&path)?,
                None => default_config(data_dir.as_deref())?,
            };
            if let Some(l) = listen {
                config.listen = l;
            }
            if let Some(d) = data_dir {
                config.data_dir = d;
            }
            if config.tls.is_none() && !config.listen.ip().is_loopback() {
                if config.proxy.is_none() {
                    bail!(
                        "refusing to serve plain HTTP on {}: configure [tls], listen on loopback, or configure [proxy] when a trusted proxy terminates TLS",
                        config.listen
                    );
                }
                tracing::warn!(listen = %config.listen, "plain HTTP on a non-loopback address: TLS must be terminated by the proxy in front");
            }
            if config.proxy.is_some() && config.public_base_url.is_none() {
                // A proxy that does not pass the client's Host on would have Bundles name
                // Hearth's own upstream address.
                tracing::warn!(
                    "[proxy] without public_base_url: FHIR Bundle links use the Host header the proxy passes on; set public_base_url to the address clients use"
                );
            }
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("binding {}", config.listen))?;
            let app = crate::startup::build(config, Arc::new(SystemClock))?;
            tracing::info!(listen = %listener.local_addr()?, "Hearth is serving");
            crate::startup::run(listener, app, crate::startup::shutdown_signal()).await?;
            Ok(0)
        }
        Command::Init { dir, json } => {
            let path = dir.join("hearth.toml");
            let data = absolute(&dir)?.join("data");
            let creds = config::write_sample(
                &path,
                &data,
                &absolute(Path::new("mappings"))?,
                &absolute(Path::new("profiles"))?,
            )?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"config": path, "principals": creds}))?
                );
            } else {
                println!(
                    "Wrote {}. Tokens (shown once; only their hashes are kept):",
                    path.display()
                );
                print_credentials(&creds);
            }
            Ok(0)
        }
        Command::Validate { file, profiles } => {
            let profiles = Profiles::load(&profiles)?;
            let resource = read_json(&file)?;
            let issues = crate::gateway::static_checks(&profiles, &resource);
            let ok = issues.is_empty();
            let issues = if ok {
                vec![crate::fhir::Issue::information(
                    "valid against Hearth's profiles",
                )]
            } else {
                issues
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&outcome::operation_outcome("validate", &issues))?
            );
            Ok(if ok { 0 } else { 1 })
        }
        Command::Translate { file, mappings } => {
            let mappings = Mappings::load(&mappings)?;
            let resource = read_json(&file)?;
            let t = mappings.translate(&resource);
            println!("{}", serde_json::to_string_pretty(&t)?);
            Ok(if t.problems.is_empty() { 0 } else { 1 })
        }
        Command::Backup { store, file } => {
            anyhow::ensure!(
                !file.exists(),
                "{} already exists; not overwriting it",
                file.display()
            );
            SqliteStore::backup_file(&store.db_path()?, &file)?;
            let v = SqliteStore::verify_file(&file, None)?;
            if v.ok() {
                println!(
                    "Backed up to {}: {} audit records verified; head {}",
                    file.display(),
                    v.records,
                    v.head
                );
                Ok(0)
            } else {
                println!(
                    "Backed up to {}, but its audit chain does not verify: run `hearth audit verify` on the store",
                    file.display()
                );
                Ok(1)
            }
        }
        Command::Token { id, org, role } => {
            let token = crate::auth::generate_token();
            println!("Token for `{id}` (shown once; only its hash goes in the config):\n{token}\n");
            // TOML strings, escaped: an id with a quote in it must not break the config
            // the operator pastes this into (and stop the next restart).
            let quoted = |s: &str| toml::Value::String(s.to_string()).to_string();
            println!(
                "Add to the config, then restart Hearth:\n\n[[principals]]\nid = {}\norg = {}\nrole = \"{}\"\ntoken_sha256 = \"{}\"",
                quoted(&id),
                quoted(&org),
                role.as_str(),
                crate::auth::hash_token(&token)
            );
            Ok(0)
        }
        Command::Audit { command } => audit(command),
    }
}

fn audit(command: AuditCommand) -> anyhow::Result<i32> {
    match command {
        AuditCommand::Verify { store, anchor } => {
            let anchor = anchor
                .map(|a| {
                    crate::audit::parse_anchor(&a).map_err(|m| anyhow::anyhow!("--anchor: {m}"))
                })
                .transpose()?;
            let started = std::time::Instant::now();
            let v = SqliteStore::verify_file(&store.db_path()?, anchor.as_deref())?;
            let secs = started.elapsed().as_secs_f64();
            match (&v.first_broken, v.anchor_found) {
                (Some(b), _) => println!(
                    "BROKEN at record {} (reference ID {}): {}. {} records before it verified.",
                    b.seq, b.reference_id, b.problem, v.records
                ),
                (None, Some(false)) => println!(
                    "The chain of {} records is intact, but the anchor is not in it: the log was rewritten or truncated.",
                    v.records
                ),
                (None, _) => println!(
                    "{}: {} records verified in {:.2}s ({:.0} records/s); head {}",
                    if v.ok() { "OK" } else { "CHAIN INTACT" },
                    v.records,
                    secs,
                    v.records as f64 / secs.max(1e-9),
                    v.head
                ),
            }
            if let Some(check) = &v.break_glass {
                for p in &check.problems {
                    println!(
                        "BREAK-GLASS REVIEW LIST ALTERED (reference ID {}): {}.",
                        p.reference_id, p.problem
                    );
                }
            }
            Ok(if v.ok() { 0 } else { 1 })
        }
        AuditCommand::Head { store } => {
            let (seq, hash) = SqliteStore::head_of_file(&store.db_path()?)?;
            println!("{seq} {hash}");
            Ok(0)
        }
        AuditCommand::Export { store, format } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let path = store.db_path()?;
            match format {
                ExportFormat::Jsonl => {
                    SqliteStore::export_file(&path, &mut |row| {
                        serde_json::to_writer(&mut out, &row)?;
                        out.write_all(b"\n")
                    })?;
                }
                ExportFormat::Csv => {
                    let mut csv = csv::Writer::from_writer(&mut out);
                    csv.write_record(CSV_COLUMNS)?;
                    SqliteStore::export_file(&path, &mut |row| {
                        let cells = csv_row(&row);
                        csv.write_record(&cells).map_err(std::io::Error::other)
                    })?;
                    csv.flush()?;
                }
                ExportFormat::AuditEvent => {
                    out.write_all(
                        b"{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"entry\":[",
                    )?;
                    let mut first = true;
                    SqliteStore::export_file(&path, &mut |row| {
                        let entry: crate::audit::AuditEntry =
                            serde_json::from_value(row.record).map_err(std::io::Error::other)?;
                        let event = crate::audit::to_audit_event(row.seq, &row.hash, &entry);
                        if !first {
                            out.write_all(b",")?;
                        }
                        first = false;
                        serde_json::to_writer(&mut out, &json!({"resource": event}))?;
                        Ok(())
                    })?;
                    out.write_all(b"]}\n")?;
                }
            }
            out.flush()?;
            Ok(0)
        }
    }
}

const CSV_COLUMNS: [&str; 22] = [
    "seq",
    "recorded",
    "reference_id",
    "parent",
    "action",
    "direction",
    "outcome",
    "status",
    "reason",
    "principal",
    "org",
    "role",
    "partner",
    "tenant",
    "resource_type",
    "consent",
    "items_written",
    "items_read",
    "hash",
    // Added after `hash`, so readers counting columns find the first nineteen in place.
    // Under what authority: an exchange only break-glass permitted names its purpose.
    "break_glass",
    "related",
    "items_withheld",
];

/// One CSV row: the record's envelope; lists are `;`-separated kinds and ids.
fn csv_row(row: &crate::store::AuditRow) -> Vec<String> {
    let r = &row.record;
    let s = |k: &str| match &r[k] {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(v) => v.clone(),
        other => other.to_string(),
    };
    let consent = match (&r["consent"]["id"], &r["consent"]["version"]) {
        (serde_json::Value::String(id), v) if !v.is_null() => format!("{id}/v{v}"),
        _ => String::new(),
    };
    let items = |k: &str| {
        r[k].as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                let kind = i["kind"].as_str().unwrap_or("");
                match i["id"].as_str() {
                    Some(id) => format!("{kind} {id}"),
                    None => kind.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join(";")
    };
    let list = |k: &str| {
        r[k].as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(";")
    };
    // A read across tenants (the feed) names each tenant it was about.
    let tenant = match s("tenant") {
        t if t.is_empty() => list("tenants_read"),
        t => t,
    };
    vec![
        row.seq.to_string(),
        s("recorded"),
        s("reference_id"),
        s("parent"),
        s("action"),
        s("direction"),
        s("outcome"),
        s("status"),
        s("reason"),
        r["actor"]["principal"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        r["actor"]["org"].as_str().unwrap_or_default().to_string(),
        r["actor"]["role"].as_str().unwrap_or_default().to_string(),
        s("partner"),
        tenant,
        s("resource_type"),
        consent,
        items("items_written"),
        list("items_read"),
        row.hash.clone(),
        s("break_glass"),
        s("related"),
        items("items_withheld"),
    ]
}

/// The config `hearth serve` uses when given none: `hearth.toml` in the data directory
/// (`--data-dir`, else hearth-data), created (with credentials printed once) on first
/// start, so the config, the store and the `audit` commands agree on one directory.
fn default_config(data_dir: Option<&Path>) -> anyhow::Result<Config> {
    let dir = data_dir.map_or_else(|| PathBuf::from(DEFAULT_DIR), Path::to_path_buf);
    let path = dir.join("hearth.toml");
    if !path.exists() {
        let creds =
            config::write_sample(&path, &dir, Path::new("mappings"), Path::new("profiles"))?;
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            println!(
                "First start: wrote {} with these credentials (shown once; only their hashes are kept):",
                path.display()
            );
            print!("{}", credential_lines(&creds));
        } else {
            // Under a service manager or in a container, stdout is a log that others read
            // and keep: the tokens go to a file only the owner can read instead.
            let file = dir.join(FIRST_CREDENTIALS);
            // Nobody would ever see these tokens if they are not written: start over
            // next time, without this run's config or a half-written file.
            let mut created = match config::create_private_file(&file) {
                Ok(f) => f,
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(e).with_context(|| {
                        format!(
                            "writing the first credentials to {} (one left by an earlier first start? remove it and start again)",
                            file.display()
                        )
                    });
                }
            };
            let lines = credential_lines(&creds);
            if let Err(e) = std::io::Write::write_all(&mut created, lines.as_bytes()) {
                let _ = std::fs::remove_file(&file);
                let _ = std::fs::remove_file(&path);
                return Err(e).with_context(|| {
                    format!("writing the first credentials to {}", file.display())
                });
            }
            println!(
                "First start: wrote {} and, readable by its owner only, the sample credentials to {} (only their hashes are kept; copy them and delete the file)",
                path.display(),
                file.display()
            );
        }
    }
    Config::load(&path)
}

/// Where a first start that is not at a terminal leaves the sample credentials.
pub const FIRST_CREDENTIALS: &str = "first-start-credentials.txt";

fn print_credentials(creds: &[config::IssuedCredential]) {
    print!("{}", credential_lines(creds));
}

fn credential_lines(creds: &[config::IssuedCredential]) -> String {
    creds
        .iter()
        .map(|c| {
            format!(
                "  {:<15} org={:<22} role={:<8} token={}\n",
                c.id,
                c.org,
                c.role.as_str(),
                c.token
            )
        })
        .collect()
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

fn read_json(file: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
}
