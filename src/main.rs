//! The `hearth` binary: parse the command line, start logging, hand over.

use clap::Parser;

// glibc malloc/free was ~15% of the inbound path's CPU under load (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // The store, its log and every backup hold tenants' health data: whatever directory
    // they land in, what Hearth creates is readable by its owner only.
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "hearth=info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in an operator's log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    hearth::tls::install_crypto_provider();
    match hearth::cli::run(hearth::cli::Cli::parse()).await {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("hearth: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
