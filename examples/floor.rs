//! The physical floors Hearth is measured against (issue 5, "Two floors").
//!
//! * `bare`: an axum server that reads the whole request body and answers a fixed
//!   OperationOutcome. Nothing a gateway could do is cheaper over HTTP/1.1 on this box.
//! * `durable`: the same, but every body is appended to a file by one writer thread that
//!   takes everything waiting in its queue, writes it, calls `fdatasync`, and only then
//!   answers those requests (group commit, no timer). Nothing that acknowledges only
//!   durable requests can be cheaper on this disk.
//!
//! ```sh
//! cargo run --release --example floor -- bare --listen 127.0.0.1:18081
//! cargo run --release --example floor -- durable --listen 127.0.0.1:18082 --file /var/tmp/floor.log
//! ```
//!
//! Same runtime as `hearth serve` (`#[tokio::main]`, one worker per core).

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use clap::{Parser, Subcommand};
use tokio::sync::oneshot;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Read the body, answer a fixed OperationOutcome.
    Bare {
        #[arg(long, default_value = "127.0.0.1:18081")]
        listen: SocketAddr,
    },
    /// Read the body, append it to FILE, group-commit with fdatasync, then answer.
    Durable {
        #[arg(long, default_value = "127.0.0.1:18082")]
        listen: SocketAddr,
        #[arg(long)]
        file: PathBuf,
    },
}

const OUTCOME: &str = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational","diagnostics":"accepted"}]}"#;

type Job = (Bytes, oneshot::Sender<()>);

#[derive(Clone)]
struct Durable {
    queue: mpsc::Sender<Job>,
}

fn fixed() -> Response {
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/fhir+json")],
        OUTCOME,
    )
        .into_response()
}

async fn bare(body: Bytes) -> Response {
    std::hint::black_box(&body);
    fixed()
}

async fn durable(State(d): State<Durable>, body: Bytes) -> Response {
    let (tx, rx) = oneshot::channel();
    if d.queue.send((body, tx)).is_err() || rx.await.is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    fixed()
}

/// The one writer: drain the queue, write, fdatasync, answer the batch.
fn writer(file: PathBuf, jobs: mpsc::Receiver<Job>) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .unwrap_or_else(|e| panic!("opening {}: {e}", file.display()));
    let mut buf = Vec::with_capacity(1 << 20);
    let mut waiting = Vec::with_capacity(1024);
    while let Ok(first) = jobs.recv() {
        waiting.push(first);
        while waiting.len() < 512 {
            match jobs.try_recv() {
                Ok(j) => waiting.push(j),
                Err(_) => break,
            }
        }
        buf.clear();
        for (body, _) in &waiting {
            buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
            buf.extend_from_slice(body);
        }
        f.write_all(&buf).expect("append");
        f.sync_data().expect("fdatasync");
        for (_, done) in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let (listen, app) = match args.mode {
        Mode::Bare { listen } => (listen, Router::new().fallback(bare)),
        Mode::Durable { listen, file } => {
            let (tx, rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("floor-writer".into())
                .spawn(move || writer(file, rx))?;
            (
                listen,
                Router::new()
                    .fallback(durable)
                    .with_state(Durable { queue: tx }),
            )
        }
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("floor listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await
}
